//! Two aggregate types whose names share a prefix, `order` and `order-line`, and a third,
//! `orders`: the names a prefix match on `{type}-` would mix.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noted(pub String);

impl DomainEvent for Noted {
    fn event_type(&self) -> String {
        "Noted".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

macro_rules! noting_aggregate {
    ($name:ident, $type:literal) => {
        /// An aggregate that records the notes it is sent.
        #[derive(Debug, Default, Serialize, Deserialize)]
        pub struct $name {
            pub notes: Vec<String>,
        }

        impl Aggregate for $name {
            const TYPE: &'static str = $type;
            type Command = String;
            type Event = Noted;
            type Error = Never;
            type Services = ();

            async fn handle(
                &mut self,
                note: String,
                _: &(),
                sink: &EventSink<Self>,
            ) -> Result<(), Never> {
                sink.write(Noted(note), self).await;
                Ok(())
            }

            fn apply(&mut self, Noted(note): Noted) {
                self.notes.push(note);
            }
        }
    };
}

noting_aggregate!(Order, "order");
noting_aggregate!(OrderLine, "order-line");
noting_aggregate!(Orders, "orders");
noting_aggregate!(BadType, "bad~type");
