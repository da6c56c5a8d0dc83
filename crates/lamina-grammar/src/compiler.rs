//! One model's grammar compiler: llguidance's parser factory over its vocabulary, made
//! once per model (it indexes the vocabulary) and shared by every request.

use crate::constraint::Constraint;
use crate::error::GrammarError;
use crate::grammar::Grammar;
use crate::vocab::Vocabulary;
use llguidance::{Matcher, ParserFactory};
use toktrie::InferenceCapabilities;

pub struct Compiler {
    factory: ParserFactory,
    end_ids: Vec<u32>,
}

impl Compiler {
    pub fn new(vocabulary: Vocabulary) -> Result<Self, GrammarError> {
        let end_ids = vocabulary.end_ids().to_vec();
        let env = vocabulary.into_env();
        let slices = llguidance::earley::SlicedBiasComputer::general_slices();
        let mut factory = ParserFactory::new(&env, InferenceCapabilities::default(), &slices).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        // Errors come back as values; nothing is printed.
        factory.quiet();
        Ok(Compiler { factory, end_ids })
    }

    /// The vocabulary's size (masks cover this many ids).
    pub fn vocab_size(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// Compiles `grammar` into a fresh constraint at its start. Fails with llguidance's
    /// reason when the grammar is malformed or unsupported.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, GrammarError> {
        let invalid = |message: String| GrammarError::Invalid { kind: grammar.kind().name(), message };
        let top = grammar.to_llguidance().map_err(invalid)?;
        let parser = self.factory.create_parser(top).map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(Constraint::new(matcher, self.end_ids.clone(), self.vocab_size()))
    }

    /// Whether `text` is JSON valid against `schema`, laid out in any way (checks a tool
    /// call's arguments that were generated without a constraint). A schema llguidance
    /// refuses is an error.
    pub fn matches_json_schema(&self, schema: &serde_json::Value, text: &str) -> Result<bool, GrammarError> {
        let mut schema = schema.clone();
        if let Some(map) = schema.as_object_mut() {
            map.insert("x-guidance".into(), serde_json::json!({"whitespace_flexible": true}));
        }
        let mut c = self.compile(&Grammar::JsonSchema(schema))?;
        let tokens = self.factory.tok_env().tok_trie().greedy_tokenize(text.as_bytes());
        Ok(c.consume_all(&tokens) && c.is_accepting())
    }
}
