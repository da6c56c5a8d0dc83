//! KV-cache bookkeeping: the block pool with its reference counts and prefix cache, the
//! hash chain that identifies a block's contents, and saving the cache across restarts.
//! The blocks' memory itself is [`lamina_model::PagedKv`].

pub mod block_hash;
pub mod block_pool;
pub mod persist;

pub use block_hash::{extend_chain, BlockHash};
pub use block_pool::{BlockId, BlockPool, Lookup};
