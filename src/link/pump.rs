//! rumqttc's event loop with each poll carried to its end, and halted only for a
//! connection about to be closed.

use rumqttc::{Event, EventLoop};

/// rumqttc's event loop with each poll carried to its end. `EventLoop::poll` is not
/// cancel-safe: dropped while it waits to hand a packet to the socket (a broker slow to
/// read), the packet it already counted in flight is lost — a PUBLISH the broker never
/// sees, whose PUBACK never comes; once the packet ids wrap round to it, rumqttc holds
/// every later publish back ("collision") and the agent publishes nothing more (seen
/// under a flood of inbound payloads on a loaded machine: tests/it/chaos.rs). The
/// driver also wakes for the outbox and the usage tick, so the poll lives in a future
/// of its own that owns the event loop and outlives those wake-ups.
pub(super) struct Pump {
    /// The event loop while no poll is under way.
    home: Option<EventLoop>,
    polling: Option<Polling>,
    /// Ends the poll under way (see `halt`).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A poll's end: the event loop back, and the event (None: halted).
type Polled = (EventLoop, Option<Result<Event, rumqttc::ConnectionError>>);

type Polling = std::pin::Pin<Box<dyn std::future::Future<Output = Polled> + Send>>;

impl Pump {
    pub(super) fn new(eventloop: EventLoop) -> Pump {
        Pump {
            home: Some(eventloop),
            polling: None,
            stop: None,
        }
    }

    /// The event loop between polls (the driver touches it only after an event, when
    /// the poll that produced it has ended, or after `halt`).
    pub(super) fn get(&mut self) -> &mut EventLoop {
        self.home
            .as_mut()
            .expect("the event loop is home between polls: only `next` takes it away")
    }

    /// Whether events already read off the socket wait in rumqttc to be handed out, one
    /// per poll. None do while a poll is under way: a poll waits only once they are out.
    pub(super) fn has_buffered(&self) -> bool {
        self.home
            .as_ref()
            .is_some_and(|e| !e.state.events.is_empty())
    }

    /// The next event: the poll under way continued, or a new one. Cancel-safe: a
    /// dropped call leaves its poll to the next call.
    pub(super) async fn next(&mut self) -> Result<Event, rumqttc::ConnectionError> {
        loop {
            let polling = match &mut self.polling {
                Some(p) => p,
                None => {
                    let mut eventloop = self
                        .home
                        .take()
                        .expect("no poll under way, so the event loop is home");
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    self.stop = Some(stop);
                    self.polling.insert(Box::pin(async move {
                        tokio::select! {
                            ev = eventloop.poll() => (eventloop, Some(ev)),
                            _ = stopped => (eventloop, None),
                        }
                    }))
                }
            };
            let (eventloop, ev) = polling.await;
            self.polling = None;
            self.stop = None;
            self.home = Some(eventloop);
            if let Some(ev) = ev {
                return ev;
            }
        }
    }

    /// The event loop, the poll under way (if any) ended and what it was doing dropped:
    /// only for a connection about to be closed, whose unacknowledged publishes the
    /// outbox sends again anyway (`Driver::renew`).
    pub(super) async fn halt(&mut self) -> &mut EventLoop {
        if let (Some(polling), Some(stop)) = (self.polling.take(), self.stop.take()) {
            let _ = stop.send(());
            let (eventloop, _) = polling.await;
            self.home = Some(eventloop);
        }
        self.get()
    }
}
