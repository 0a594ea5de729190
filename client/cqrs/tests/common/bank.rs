//! The README's bank account as a cqrs-es aggregate: open, deposit, withdraw, never below
//! zero.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: Option<String>,
    pub balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountCommand {
    Open {
        owner: String,
    },
    Deposit {
        amount: i64,
    },
    /// Several deposits, one event each (a command whose events may cross a snapshot).
    DepositEach {
        amounts: Vec<i64>,
    },
    Withdraw {
        amount: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("already open")]
    AlreadyOpen,
    #[error("no such account")]
    NoSuchAccount,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
}

/// What commands may wait on: with a gate, every command waits there twice after its
/// aggregate is loaded, before deciding. Concurrent commands on one gate decide on the same
/// state; a test on the gate can act between a command's load and its commit (its first
/// wait returns once the command has loaded; its second lets the command go on).
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub gate: Option<Arc<tokio::sync::Barrier>>,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: AccountCommand,
        services: &Services,
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        if let Some(gate) = &services.gate {
            gate.wait().await;
            gate.wait().await;
        }
        match command {
            AccountCommand::Open { owner } => {
                if self.owner.is_some() {
                    return Err(AccountError::AlreadyOpen);
                }
                sink.write(AccountEvent::Opened { owner }, self).await;
            }
            AccountCommand::Deposit { amount } => {
                self.open()?;
                sink.write(AccountEvent::Deposited { amount }, self).await;
            }
            AccountCommand::DepositEach { amounts } => {
                self.open()?;
                for amount in amounts {
                    sink.write(AccountEvent::Deposited { amount }, self).await;
                }
            }
            AccountCommand::Withdraw { amount } => {
                self.open()?;
                if self.balance < amount {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        asked: amount,
                    });
                }
                sink.write(AccountEvent::Withdrawn { amount }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

impl Account {
    fn open(&self) -> Result<(), AccountError> {
        match self.owner {
            Some(_) => Ok(()),
            None => Err(AccountError::NoSuchAccount),
        }
    }
}
