//! lamina-grammar: constrained decoding. A [`Grammar`] (a JSON schema, "any JSON object",
//! a Lark grammar or a GBNF grammar) is compiled by llguidance, against one model's
//! vocabulary ([`Vocabulary`], built from our own tokenizer through [`TokenSource`]), into
//! a [`Constraint`]: before each token it says which tokens may come next (a mask over the
//! logits), and after each it advances. [`Lookahead`] computes the next mask on a helper
//! thread of its own while the model runs its forward pass.
//!
//! No tensors here: the crate depends on llguidance and nothing of the model.

mod compiler;
mod constraint;
mod error;
mod gbnf;
mod grammar;
mod lookahead;
mod vocab;

pub use compiler::Compiler;
pub use constraint::{Constraint, MaskStats};
pub use error::GrammarError;
pub use gbnf::gbnf_to_lark;
pub use grammar::{Grammar, GrammarKind};
pub use lookahead::Lookahead;
pub use vocab::{TokenSource, Vocabulary};
