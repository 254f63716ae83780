//! `GET /api/system/events`: the event stream as server-sent events, for
//! the web panel and any API client. Each caller sees what its token (or
//! session) reaches: a VM session its VM, a token its hosts, the admin
//! everything; the query narrows it further.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::auth::Caller;
use super::extract::ApiQuery;
use crate::auth::Principal;
use crate::model::event::{Event, EventQuery};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/system/events",
    tag = "system",
    summary = "Server-sent events: task states, power changes and new samples",
    description = "A `text/event-stream` that stays open: each event's `event:` line is its kind \
                   (`task`, `power`, `sample`) and its `data:` line the object as JSON. A task \
                   goes `queued` → `running` (again at each recorded step) → `done` or `failed`. \
                   Filtered to what the caller reaches (a token's hosts; a VM session's VM; \
                   system tasks for admin only), and by `hs_name` and `vm_uuid` when given. A \
                   client that falls behind gets a `lagged` event with the number of events it \
                   missed (re-read the lists then). Bearer token or session cookie.",
    params(EventQuery),
    responses((status = 200, description = "The stream (one JSON object per event)",
               content_type = "text/event-stream", body = Event)),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let filter = Filter {
        principal: caller.principal,
        query,
    };
    let stream = futures_util::stream::unfold(
        (state.events.subscribe(), filter),
        |(mut receiver, filter)| async move {
            loop {
                let next = match receiver.recv().await {
                    Ok(event) if filter.passes(&event) => encode(&event),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        SseEvent::default().event("lagged").data(missed.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(next), (receiver, filter)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Filter {
    principal: Principal,
    query: EventQuery,
}

impl Filter {
    fn passes(&self, event: &Event) -> bool {
        let (host, vm) = event.subject();
        self.principal.sees(host, vm)
            && (self.query.hs_name.is_empty() || self.query.hs_name == host)
            && (self.query.vm_uuid.is_empty() || self.query.vm_uuid == vm)
    }
}

fn encode(event: &Event) -> SseEvent {
    let kind = event.kind();
    match SseEvent::default().event(kind).json_data(event) {
        Ok(encoded) => encoded,
        // Our own types always serialize; say so rather than drop it.
        Err(error) => SseEvent::default()
            .event("error")
            .data(format!("cannot encode a {kind} event: {error}")),
    }
}
