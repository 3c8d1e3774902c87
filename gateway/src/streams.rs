//! Long responses: a tenant's audit export and live stream last as long as their client reads.
//! How many may be open (in all, and per caller), and how long each may run: while its caller's
//! credential stays valid, checked every [`RECHECK`] (a revoked session or API key, or an expired
//! token, ends its streams as it ends its requests), and while its client keeps taking it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kit::ApiError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::AppState;

/// How often an open stream's credential is verified again.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The open streams.
#[derive(Debug)]
pub struct Streams {
    total: Arc<Semaphore>,
    per_caller: Mutex<HashMap<String, usize>>,
    per_caller_max: usize,
    /// How long a stream may wait for its client to take more.
    stall: Duration,
}

/// One open stream's place, given back when the stream is dropped.
#[derive(Debug)]
pub struct Slot {
    streams: Arc<Streams>,
    caller: String,
    _total: OwnedSemaphorePermit,
}

impl Streams {
    pub fn new(max: usize, per_caller_max: usize, stall: Duration) -> Arc<Self> {
        Arc::new(Self { total: Arc::new(Semaphore::new(max)), per_caller: Mutex::default(), per_caller_max, stall })
    }

    /// A place for a stream of `caller`, or 429 `TOO_MANY_STREAMS`.
    pub fn open(self: &Arc<Self>, caller: &str) -> Result<Slot, ApiError> {
        let busy = |message: &str| {
            ApiError::resource_exhausted("TOO_MANY_STREAMS", message.to_owned())
                .with_retry_after(Duration::from_secs(5))
        };
        let total =
            self.total.clone().try_acquire_owned().map_err(|_| busy("the gateway has too many open streams"))?;
        let mut open = self.per_caller.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(caller.to_owned()).or_default();
        if *n >= self.per_caller_max {
            return Err(busy("this caller has too many open streams"));
        }
        *n += 1;
        Ok(Slot { streams: self.clone(), caller: caller.to_owned(), _total: total })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.per_caller.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// Serves `items` through a task of its own that holds `slot`, so that the stream ends however its
/// client behaves:
/// - when its caller's `token` stops verifying as valid (checked every [`RECHECK`]; an unreachable
///   Redis is not a refusal, it is tried again at the next check);
/// - when its client takes nothing for the stall timeout. Over HTTP/2 a client can stop reading one
///   stream while its connection stays busy, so the connection's write timeout never fires.
///
/// A stream cut short ends with an error, which aborts the response: an export never looks
/// complete when it is not.
pub fn guarded<T: Send + 'static>(
    items: impl Stream<Item = Result<T, Status>> + Send + 'static,
    slot: Slot,
    state: AppState,
    token: String,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // Why the stream was cut short, if it was: sent as the task ends, after its last item.
    let (cut, reason) = tokio::sync::oneshot::channel::<Status>();
    let stall = slot.streams.stall;
    tokio::spawn(async move {
        let _slot = slot;
        let mut items = std::pin::pin!(items);
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        let end = loop {
            tokio::select! {
                item = items.next() => match item {
                    None => break None,
                    Some(item) => match tokio::time::timeout(stall, tx.send(item)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => break Some(Status::deadline_exceeded("the client stopped reading")),
                    },
                },
                () = tx.closed() => break None,
                _ = recheck.tick() => match state.verifier.verify(&token).await {
                    Ok(_) => {}
                    Err(e) if matches!(e.code, kit::ErrorCode::Unauthenticated | kit::ErrorCode::PermissionDenied) => {
                        tracing::info!(reason = %e.reason, "stream ended: its credential is no longer valid");
                        break Some(Status::unauthenticated("the credential is no longer valid"));
                    }
                    Err(e) => tracing::warn!(reason = %e.reason, "stream credential not checked; trying again"),
                },
            }
        };
        if let Some(status) = end {
            let _ = cut.send(status);
        }
    });
    let last = futures::stream::once(async move { reason.await.ok().map(Err) });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Some).chain(last).filter_map(std::future::ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_limited_in_all_and_per_caller_and_given_back_when_dropped() {
        let streams = Streams::new(3, 2, Duration::from_secs(30));
        let a1 = streams.open("user:a").expect("a 1");
        let _a2 = streams.open("user:a").expect("a 2");
        let err = streams.open("user:a").expect_err("a 3");
        assert_eq!(err.reason, "TOO_MANY_STREAMS");
        assert_eq!(err.code, kit::ErrorCode::ResourceExhausted);
        let _b1 = streams.open("user:b").expect("b 1");
        assert!(streams.open("user:c").is_err(), "three in all");
        drop(a1);
        let _c1 = streams.open("user:c").expect("a place was given back");
        assert!(streams.open("user:a").is_err(), "in all again");
    }
}
