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
                   missed (re-read the lists then). Bearer token or session cookie; the stream \
                   ends (after an `ended` event) within seconds of the token being revoked or \
                   expiring, or the session ending.",
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
        principal: caller.principal.clone(),
        query,
    };
    let watch = Watch {
        state: state.clone(),
        caller,
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK),
    };
    let stream = futures_util::stream::unfold(
        Some((state.events.subscribe(), filter, watch)),
        |open| async move {
            let (mut receiver, mut filter, mut watch) = open?;
            loop {
                let next = tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(event) if filter.passes(&event) => encode(&event),
                        Ok(_) => continue,
                        Err(RecvError::Lagged(missed)) => {
                            SseEvent::default().event("lagged").data(missed.to_string())
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = watch.recheck.tick() => match watch.caller.current(&watch.state) {
                        // The token's hosts may have changed too.
                        Ok(principal) => {
                            filter.principal = principal;
                            continue;
                        }
                        Err(why) => {
                            let ended = SseEvent::default().event("ended").data(why.to_string());
                            return Some((Ok(ended), None));
                        }
                    },
                };
                return Some((Ok(next), Some((receiver, filter, watch))));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// How often a stream asks whether its caller is still who it was.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// What a stream needs to ask again.
struct Watch {
    state: Arc<AppState>,
    caller: Caller,
    recheck: tokio::time::Interval,
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
