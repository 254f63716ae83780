//! The event hub: the task runner, the services and the poller publish what
//! changed; each `GET /api/system/events` stream subscribes. A broadcast
//! channel: publishing never waits, and a subscriber that falls behind by
//! more than [`BACKLOG`] events is told so and goes on from the newest.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::event::Event;

/// Events kept for a slow subscriber.
const BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    /// Send `event` to every stream open now (none: it is dropped).
    pub fn publish(&self, event: Event) {
        let _no_subscriber = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}
