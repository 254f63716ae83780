//! One-time console tickets: `vncons` binds a short-lived random ticket to a
//! VM's console endpoint; the console page redeems it once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plugin::bindings::ConsoleEndpoint;

pub struct ConsoleTicket {
    pub host: String,
    pub vm_uuid: String,
    pub endpoint: ConsoleEndpoint,
    expires: Instant,
}

pub struct ConsoleTickets {
    lifetime: Duration,
    tickets: Mutex<HashMap<String, ConsoleTicket>>,
}

impl ConsoleTickets {
    pub fn new(lifetime: Duration) -> ConsoleTickets {
        ConsoleTickets {
            lifetime,
            tickets: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issue a ticket for the endpoint; expired tickets are dropped here.
    pub fn issue(&self, host: &str, vm_uuid: &str, endpoint: ConsoleEndpoint) -> String {
        let ticket = crate::auth::generate_token();
        let now = Instant::now();
        let mut tickets = self
            .tickets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tickets.retain(|_, issued| issued.expires > now);
        tickets.insert(
            ticket.clone(),
            ConsoleTicket {
                host: host.to_owned(),
                vm_uuid: vm_uuid.to_owned(),
                endpoint,
                expires: now + self.lifetime,
            },
        );
        ticket
    }

    /// Take the ticket: a second redemption, or one after expiry, finds nothing.
    pub fn redeem(&self, ticket: &str) -> Option<ConsoleTicket> {
        let mut tickets = self
            .tickets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let issued = tickets.remove(ticket)?;
        (issued.expires > Instant::now()).then_some(issued)
    }
}
