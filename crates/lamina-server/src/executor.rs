//! The engine thread: every model's [`Engine`] lives here and only here, stepped in turn
//! on the process's one worker pool, so models never compete for cores mid-step.
//!
//! HTTP handlers talk to it through a channel of [`Command`]s. A submitted job's tokens
//! come back on the job's own event channel: the engine's per-token callback pushes them
//! as they are sampled, and a job whose receiver is gone (its client disconnected)
//! cancels its sequences at the next step.

use crate::metrics as m;
use lamina_api::ApiError;
use lamina_engine::{Engine, FinishReason, Request, SeqId, TokenLogprob};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// What a job's receiver gets.
#[derive(Debug)]
pub enum Event {
    Token {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// `tokens`: the generated ids (which stop string ended it can be read from them).
    Done {
        choice: usize,
        reason: FinishReason,
        cached_tokens: usize,
        generated_tokens: usize,
        tokens: Vec<u32>,
    },
}

pub enum Command {
    /// A model's engine, ready to take requests.
    Install {
        model: String,
        engine: Box<Engine>,
        cache_file: Option<PathBuf>,
    },
    /// Drops an idle model's engine (and so its memory); replies once it is gone.
    Unload {
        model: String,
        done: oneshot::Sender<()>,
    },
    /// Queues the choices of one job (one [`Request`] each, in choice order).
    Submit {
        model: String,
        requests: Vec<Request>,
        events: tmpsc::UnboundedSender<Event>,
        reply: oneshot::Sender<Result<(), SubmitError>>,
    },
    Shutdown,
}

#[derive(Debug)]
pub enum SubmitError {
    /// The model's engine is not installed (it was unloaded meanwhile): load and retry.
    NotLoaded,
    Api(ApiError),
}

/// Where a sequence's events go.
struct Route {
    events: tmpsc::UnboundedSender<Event>,
    choice: usize,
}

struct Slot {
    engine: Box<Engine>,
    /// Where its prefix cache is saved when it is unloaded or the server stops.
    cache_file: Option<PathBuf>,
    routes: HashMap<SeqId, Route>,
    idle_since: Instant,
}

pub struct Executor {
    rx: mpsc::Receiver<Command>,
    slots: HashMap<String, Slot>,
    max_queue: usize,
    idle_unload: Option<Duration>,
    /// Called with a model's name when the executor unloads it for idleness.
    on_unload: Box<dyn Fn(&str) + Send>,
}

impl Executor {
    pub fn new(rx: mpsc::Receiver<Command>, max_queue: usize, idle_unload: Option<Duration>, on_unload: Box<dyn Fn(&str) + Send>) -> Self {
        Executor { rx, slots: HashMap::new(), max_queue, idle_unload, on_unload }
    }

    /// Runs until [`Command::Shutdown`] or until every sender is gone.
    pub fn run(mut self) {
        loop {
            let busy = self.slots.values().any(|s| s.engine.active() > 0);
            // Idle: block for the next command (waking now and then for idle unloading).
            let first = if busy {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match self.rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(c) => Some(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut next = first;
            while let Some(cmd) = next {
                if !self.handle(cmd) {
                    return;
                }
                next = self.rx.try_recv().ok();
            }
            for (name, slot) in self.slots.iter_mut() {
                if slot.engine.active() > 0 {
                    step(name, slot);
                }
            }
            self.unload_idle();
        }
    }

    /// Returns `false` on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Shutdown => {
                for (name, slot) in self.slots.drain() {
                    save_cache(&name, &slot);
                }
                return false;
            }
            Command::Install { model, engine, cache_file } => {
                self.slots.insert(model.clone(), Slot { engine, cache_file, routes: HashMap::new(), idle_since: Instant::now() });
                publish(&model, &self.slots[&model]);
            }
            Command::Unload { model, done } => {
                if let Some(mut slot) = self.slots.remove(&model) {
                    cancel_all(&mut slot);
                    save_cache(&model, &slot);
                    m::clear_model(&model);
                }
                let _ = done.send(());
            }
            Command::Submit { model, requests, events, reply } => {
                let result = match self.slots.get_mut(&model) {
                    None => Err(SubmitError::NotLoaded),
                    Some(slot) => {
                        let r = submit(slot, requests, events, self.max_queue);
                        publish(&model, slot);
                        r
                    }
                };
                let _ = reply.send(result);
            }
        }
        true
    }

    fn unload_idle(&mut self) {
        let Some(after) = self.idle_unload else { return };
        let idle: Vec<String> = self.slots.iter().filter(|(_, s)| s.engine.active() == 0 && s.idle_since.elapsed() >= after).map(|(n, _)| n.clone()).collect();
        for name in idle {
            if let Some(slot) = self.slots.remove(&name) {
                save_cache(&name, &slot);
            }
            m::clear_model(&name);
            tracing::info!(model = %name, "unloaded after {after:?} idle");
            (self.on_unload)(&name);
        }
    }
}

fn submit(slot: &mut Slot, requests: Vec<Request>, events: tmpsc::UnboundedSender<Event>, max_queue: usize) -> Result<(), SubmitError> {
    let waiting = slot.engine.stats().waiting;
    if waiting + requests.len() > max_queue.max(1) {
        return Err(SubmitError::Api(ApiError::rate_limited(format!(
            "{waiting} requests are already waiting for this model (the queue holds {max_queue}); retry shortly"
        ))));
    }
    for r in &requests {
        slot.engine.check(&r.prompt, &r.params).map_err(|e| SubmitError::Api(ApiError::invalid_request(e.to_string())))?;
    }
    let mut added = Vec::new();
    for (choice, mut request) in requests.into_iter().enumerate() {
        let tx = events.clone();
        request.callback = Some(Box::new(move |ev| {
            if ev.token.is_some() {
                let sent = tx.send(Event::Token { choice, text: ev.text.to_string(), logprob: ev.logprob.cloned() });
                return sent.is_ok();
            }
            !tx.is_closed()
        }));
        match slot.engine.add(request) {
            Ok(id) => {
                added.push(id);
                slot.routes.insert(id, Route { events: events.clone(), choice });
            }
            Err(e) => {
                // Checked above; should a later choice still fail, none of the job runs.
                for id in added {
                    slot.engine.cancel(id);
                    slot.routes.remove(&id);
                }
                slot.engine.take_finished();
                return Err(SubmitError::Api(ApiError::invalid_request(e.to_string())));
            }
        }
    }
    // Requests that finish at once (max_tokens 0) are reported now.
    deliver_finished(slot);
    Ok(())
}

fn step(name: &str, slot: &mut Slot) {
    if let Err(e) = slot.engine.step() {
        // A failed forward pass is a bug, not the client's doing: end every sequence of
        // this model with an error event rather than leaving clients hanging.
        tracing::error!(model = %name, "engine step failed: {e}");
        cancel_all(slot);
    }
    if slot.engine.active() == 0 {
        slot.idle_since = Instant::now();
    }
    // The gauges first: a client that has its last event sees metrics that already count
    // its blocks as free.
    publish(name, slot);
    deliver_finished(slot);
}

fn deliver_finished(slot: &mut Slot) {
    for f in slot.engine.take_finished() {
        if let Some(route) = slot.routes.remove(&f.seq) {
            let _ = route.events.send(Event::Done {
                choice: route.choice,
                reason: f.reason,
                cached_tokens: f.stats.cached_tokens,
                generated_tokens: f.stats.generated_tokens,
                tokens: f.tokens,
            });
        }
    }
}

fn cancel_all(slot: &mut Slot) {
    let ids: Vec<SeqId> = slot.routes.keys().copied().collect();
    for id in ids {
        slot.engine.cancel(id);
    }
    deliver_finished(slot);
}

/// Saves a model's prefix cache where it was loaded from (failures are reported, not
/// fatal: the cache is an optimisation).
fn save_cache(name: &str, slot: &Slot) {
    if let Some(file) = &slot.cache_file {
        match slot.engine.save_prefix_cache(file) {
            Ok(n) => tracing::info!(model = %name, "saved {n} cached KV blocks to {}", file.display()),
            Err(e) => eprintln!("warning: could not save the prefix cache of `{name}`: {e}"),
        }
    }
}

fn publish(name: &str, slot: &Slot) {
    m::engine_stats(name, &slot.engine.stats());
}
