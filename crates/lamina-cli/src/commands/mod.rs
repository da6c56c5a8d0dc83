pub mod bench;
pub mod chat;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod tokenize;
