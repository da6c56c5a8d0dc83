//! A [`Constraint`] on a helper thread of its own, so that the mask for a sequence's next
//! token is computed while the model runs the forward pass that produces its logits.
//!
//! After each accepted token the helper advances the grammar, answers whether it is done,
//! and goes on to compute the next mask; [`Lookahead::apply`] waits only for what is not
//! ready yet. The thread ends when the `Lookahead` is dropped.

use crate::constraint::{Constraint, Mask, MaskStats};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

enum Reply {
    /// The grammar advanced past the token; whether it is complete.
    Accepted {
        done: bool,
    },
    Mask(Mask),
}

pub struct Lookahead {
    tokens: Option<Sender<u32>>,
    replies: Receiver<Reply>,
    helper: Option<JoinHandle<MaskStats>>,
    done: bool,
    /// What stays open should the helper be gone (it could not start, or it failed).
    end_ids: Vec<u32>,
    /// Time `apply` spent waiting for a mask (what the overlap did not hide).
    waited: Duration,
}

impl Lookahead {
    /// Starts the helper, which begins with the first mask at once.
    pub fn new(mut constraint: Constraint) -> Self {
        let end_ids = constraint.end_ids().to_vec();
        let (tokens, token_rx) = channel::<u32>();
        let (reply_tx, replies) = channel();
        let helper = std::thread::Builder::new()
            .name("lamina-grammar".into())
            .spawn(move || {
                if reply_tx.send(Reply::Mask(constraint.mask())).is_err() {
                    return constraint.stats();
                }
                while let Ok(token) = token_rx.recv() {
                    constraint.accept(token);
                    let done = constraint.is_done();
                    if reply_tx.send(Reply::Accepted { done }).is_err() || done {
                        break;
                    }
                    if reply_tx.send(Reply::Mask(constraint.mask())).is_err() {
                        break;
                    }
                }
                constraint.stats()
            })
            .ok();
        Lookahead { tokens: Some(tokens), replies, helper, done: false, end_ids, waited: Duration::ZERO }
    }

    /// Masks `logits` with the grammar's allowed tokens (waiting for the mask if the helper
    /// is still computing it). Without a helper (it could not start, or it stopped) only
    /// the end of generation is left open.
    pub fn apply(&mut self, logits: &mut [f32]) {
        let t0 = Instant::now();
        let reply = self.replies.recv();
        self.waited += t0.elapsed();
        match reply {
            Ok(Reply::Mask(mask)) => mask.apply(logits),
            _ => {
                self.done = true;
                for (i, l) in logits.iter_mut().enumerate() {
                    if !self.end_ids.contains(&(i as u32)) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }

    /// The token chosen after the last mask.
    pub fn accept(&mut self, token: u32) {
        let sent = self.tokens.as_ref().is_some_and(|t| t.send(token).is_ok());
        self.done = !sent
            || match self.replies.recv() {
                Ok(Reply::Accepted { done }) => done,
                _ => true,
            };
    }

    /// Whether the output is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Time spent waiting for masks so far.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Stops the helper and returns its mask times.
    pub fn finish(mut self) -> MaskStats {
        self.stop()
    }

    fn stop(&mut self) -> MaskStats {
        self.tokens = None;
        self.helper.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Lookahead {
    fn drop(&mut self) {
        self.stop();
    }
}
