//! The README's event-sourced bank account, on cqrs-es: open, deposit, withdraw with
//! optimistic concurrency, and snapshots.
//!
//! Run a server (`cargo run --release -p quiver-server -- serve`), then
//! `cargo run -p quiver-cqrs --example bank_account`. Two "tellers" withdraw from the same
//! account at once; each command loads the account, decides, and commits at the sequence it
//! loaded, so if both decide on the same state one of them gets `AggregateConflict`, runs
//! its command again on the new state and is refused: the balance never goes below zero and
//! no withdrawal is lost. A snapshot store snapshots every 3 events.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent, EventEnvelope, Query};
use quiver_client::{Client, ClientConfig};
use quiver_cqrs::{QuiverCqrs, QuiverEventRepository};
use serde::{Deserialize, Serialize};

/// The aggregate's state, folded from its events.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: i64,
}

#[derive(Debug, Clone)]
enum Command {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for Event {
    fn event_type(&self) -> String {
        match self {
            Event::Opened { .. } => "Opened",
            Event::Deposited { .. } => "Deposited",
            Event::Withdrawn { .. } => "Withdrawn",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("already open")]
    AlreadyOpen,
    #[error("no such account")]
    NoSuchAccount,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Error = Refusal;
    type Services = ();

    async fn handle(
        &mut self,
        command: Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refusal> {
        let event = match command {
            Command::Open { owner } => match self.owner {
                Some(_) => return Err(Refusal::AlreadyOpen),
                None => Event::Opened { owner },
            },
            _ if self.owner.is_none() => return Err(Refusal::NoSuchAccount),
            Command::Deposit { amount } => Event::Deposited { amount },
            Command::Withdraw { amount } if self.balance < amount => {
                return Err(Refusal::InsufficientFunds {
                    balance: self.balance,
                    asked: amount,
                })
            }
            Command::Withdraw { amount } => Event::Withdrawn { amount },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Opened { owner } => self.owner = Some(owner),
            Event::Deposited { amount } => self.balance += amount,
            Event::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// A query: prints every event committed.
struct Journal;

#[async_trait::async_trait]
impl Query<Account> for Journal {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<Account>]) {
        for e in events {
            println!("  journal: {aggregate_id} #{} {:?}", e.sequence, e.payload);
        }
    }
}

/// Runs a command; on a conflict (another command committed first), runs it again on the
/// new state. Returns the outcome and the number of conflicts.
async fn execute(
    cqrs: &QuiverCqrs<Account>,
    id: &str,
    command: Command,
) -> (Result<(), AggregateError<Refusal>>, u32) {
    let mut conflicts = 0;
    loop {
        match cqrs.execute(id, command.clone()).await {
            Err(AggregateError::AggregateConflict) => conflicts += 1,
            outcome => return (outcome, conflicts),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::var("QUIVER_DATA_DIR").unwrap_or_else(|_| "quiver-data".into());
    let client = Client::connect(ClientConfig::local(&data_dir)).await?;
    let repo = QuiverEventRepository::new(client.clone());
    let cqrs: QuiverCqrs<Account> =
        CqrsFramework::new(repo.clone().snapshot_store(3), vec![Box::new(Journal)], ());
    let id = uuid::Uuid::new_v4().to_string();

    execute(
        &cqrs,
        &id,
        Command::Open {
            owner: "ada".into(),
        },
    )
    .await
    .0?;
    for amount in [100, 50, 25] {
        execute(&cqrs, &id, Command::Deposit { amount }).await.0?;
    }
    // Two tellers race to withdraw 100 each from a balance of 175: one must be refused.
    let (a, b) = tokio::join!(
        execute(&cqrs, &id, Command::Withdraw { amount: 100 }),
        execute(&cqrs, &id, Command::Withdraw { amount: 100 }),
    );
    let mut refused = 0;
    for (teller, (outcome, conflicts)) in [("teller 1", a), ("teller 2", b)] {
        match outcome {
            Ok(()) => println!("{teller}: withdrew 100 ({conflicts} conflicts)"),
            Err(AggregateError::UserError(refusal)) => {
                refused += 1;
                println!("{teller}: refused ({refusal}; {conflicts} conflicts)");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let events = repo.get_events::<Account>(&id).await?;
    let balance: i64 = events
        .iter()
        .map(|e| match serde_json::from_value(e.payload.clone()) {
            Ok(Event::Deposited { amount }) => amount,
            Ok(Event::Withdrawn { amount }) => -amount,
            _ => 0,
        })
        .sum();
    let snapshot = repo.get_snapshot::<Account>(&id).await?;
    println!(
        "stream {}: {} events, balance {balance}, snapshot at sequence {:?}",
        quiver_cqrs::event_stream(Account::TYPE, &id)?,
        events.len(),
        snapshot.map(|s| s.current_sequence),
    );
    assert_eq!(refused, 1, "exactly one withdrawal was refused");
    assert_eq!(balance, 75, "exactly one withdrawal of 100 went through");
    client.close().await;
    Ok(())
}
