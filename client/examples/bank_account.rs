//! An event-sourced bank account on Quiver: open, deposit, withdraw with optimistic
//! concurrency, and snapshots.
//!
//! Run a server (`cargo run --release -p quiver-server -- serve`), then
//! `cargo run -p quiver-client --example bank_account`. Two "tellers" withdraw from the same
//! account at once; each decides on the state it loaded and appends with `Exact(version)`,
//! so one of them loses the race, reloads and decides again: the balance never goes below
//! zero and no withdrawal is lost.

use quiver_client::{
    Client, ClientConfig, Error, EventData, ExpectedVersion, ReadStreamOptions, StreamVersion,
};
use serde_json::{json, Value};

/// The aggregate's state, folded from its events.
#[derive(Debug, Default, Clone)]
struct Account {
    owner: Option<String>,
    balance: i64,
    /// Version of the last event folded in (`None`: no events yet).
    version: Option<StreamVersion>,
}

impl Account {
    fn apply(&mut self, event_type: &str, data: &Value, version: StreamVersion) {
        match event_type {
            "Opened" => self.owner = data["owner"].as_str().map(str::to_string),
            "Deposited" => self.balance += data["amount"].as_i64().unwrap_or(0),
            "Withdrawn" => self.balance -= data["amount"].as_i64().unwrap_or(0),
            _ => {}
        }
        self.version = Some(version);
    }

    fn snapshot(&self) -> Vec<u8> {
        json!({"owner": self.owner, "balance": self.balance})
            .to_string()
            .into_bytes()
    }
}

/// Snapshot every this many events.
const SNAPSHOT_EVERY: u64 = 3;

/// Loads an account: the newest snapshot, then the events after it.
async fn load(client: &Client, stream: &str) -> Result<Account, Error> {
    let mut account = Account::default();
    let mut from = StreamVersion(0);
    if let Some((version, blob)) = client.newest_snapshot(stream).await? {
        let v: Value = serde_json::from_slice(&blob).unwrap_or_default();
        account.owner = v["owner"].as_str().map(str::to_string);
        account.balance = v["balance"].as_i64().unwrap_or(0);
        account.version = Some(version);
        from = version.next();
    }
    let mut events = match client
        .read_stream(stream, ReadStreamOptions::default().from(from))
        .await
    {
        Ok(events) => events,
        Err(Error::NotFound(_)) => return Ok(account),
        Err(e) => return Err(e),
    };
    while let Some(e) = events.next().await? {
        let data: Value = serde_json::from_slice(&e.data).unwrap_or_default();
        account.apply(&e.event_type, &data, e.version);
    }
    Ok(account)
}

/// Runs a command: load, decide, append with the version it decided on; on a conflict,
/// load again and decide again.
async fn execute(
    client: &Client,
    stream: &str,
    decide: impl Fn(&Account) -> Result<Vec<(&'static str, Value)>, String>,
) -> Result<Result<Account, String>, Error> {
    loop {
        let account = load(client, stream).await?;
        let events = match decide(&account) {
            Ok(events) => events,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let expected = ExpectedVersion::from(account.version);
        let data = events
            .iter()
            .map(|(t, v)| EventData::json(*t, v.to_string()))
            .collect();
        match client.append(stream, expected, data).await {
            Ok(r) => {
                let mut after = account.clone();
                let last = r.next_expected_version;
                let first = last.get() + 1 - events.len() as u64;
                for (i, (t, v)) in events.iter().enumerate() {
                    after.apply(t, v, StreamVersion(first + i as u64));
                }
                // Snapshot when this append completed a run of SNAPSHOT_EVERY events.
                if (first..=last.get()).any(|v| (v + 1) % SNAPSHOT_EVERY == 0) {
                    client
                        .put_snapshot(stream, r.next_expected_version, after.snapshot())
                        .await?;
                }
                return Ok(Ok(after));
            }
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn withdraw(amount: i64) -> impl Fn(&Account) -> Result<Vec<(&'static str, Value)>, String> {
    move |a| {
        if a.owner.is_none() {
            return Err("no such account".into());
        }
        if a.balance < amount {
            return Err(format!(
                "insufficient funds: balance {}, asked {amount}",
                a.balance
            ));
        }
        Ok(vec![("Withdrawn", json!({ "amount": amount }))])
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::var("QUIVER_DATA_DIR").unwrap_or_else(|_| "quiver-data".into());
    let client = Client::connect(ClientConfig::local(&data_dir)).await?;
    let stream = format!("account-{}", uuid::Uuid::new_v4());

    execute(&client, &stream, |a| match a.owner {
        Some(_) => Err("already open".into()),
        None => Ok(vec![("Opened", json!({"owner": "ada"}))]),
    })
    .await??;
    for amount in [100, 50, 25] {
        execute(&client, &stream, |_| {
            Ok(vec![("Deposited", json!({ "amount": amount }))])
        })
        .await??;
    }
    // Two tellers race to withdraw 100 each from a balance of 175: one must be refused.
    let (a, b) = tokio::join!(
        execute(&client, &stream, withdraw(100)),
        execute(&client, &stream, withdraw(100)),
    );
    for (teller, outcome) in [("teller 1", a?), ("teller 2", b?)] {
        match outcome {
            Ok(acct) => println!("{teller}: withdrew 100, balance {}", acct.balance),
            Err(refusal) => println!("{teller}: refused ({refusal})"),
        }
    }
    let account = load(&client, &stream).await?;
    println!(
        "{stream}: owner {:?}, balance {}, version {:?}, snapshots at {:?}",
        account.owner,
        account.balance,
        account.version,
        client.list_snapshots(&stream).await?
    );
    assert_eq!(
        account.balance, 75,
        "exactly one withdrawal of 100 went through"
    );
    client.close().await;
    Ok(())
}
