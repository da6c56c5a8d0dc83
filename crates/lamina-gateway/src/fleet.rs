//! State shared by several gateways through Redis (`[gateway] state = "redis://..."`): the
//! keys' spend and rate windows and the exact response cache. A fleet of gateways in front
//! of the same backends then enforces one budget and one rate limit per key, and an answer
//! cached by one is a hit on all.
//!
//! Layout, under the prefix (`lamina:` unless `state_prefix` says otherwise):
//! - `spent:{key}` — the key's spend in 1e-12 units, an integer (`INCRBY`);
//! - `requests:{key}` and `tokens:{key}` — hashes of Redis-clock second → count, the fields
//!   older than a minute dropped as they are read;
//! - `cache:{sha256}` — an answer as JSON, with the route's TTL (`SET .. PX`).
//!
//! The rate check and the count of an admitted request are one Lua script, so two gateways
//! cannot both admit the last request of a minute. Time is Redis's (`TIME`), so gateways
//! with skewed clocks share one window. As in memory, a budget is charged when a request's
//! cost is known: requests in flight on several gateways when a budget runs out all finish.
//!
//! When Redis cannot be reached, a request for a key with limits is refused with 503
//! (`state_unavailable`) rather than served unmetered; the cache misses; a charge that
//! cannot be written is reported on stderr.

use crate::cache::CacheKey;
use crate::limits::{KeyLimits, Refusal};
use crate::price::Cost;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// The admission check and count: KEYS = requests, tokens, spent; ARGV = rpm, tpm (0: none),
/// budget (integer units, '' for none). Returns {code, used, retry_after, spent}: code 0
/// admitted, 1 over rpm, 2 over tpm, 3 over budget. Spend and budget are compared as
/// decimal strings (length, then digits), exactly: Lua's numbers are doubles.
const ADMIT: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local function window(key)
  local total, oldest = 0, nil
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local s, n = tonumber(all[i]), tonumber(all[i + 1])
    if s + 60 > now then
      total = total + n
      if oldest == nil or s < oldest then oldest = s end
    else
      redis.call('HDEL', key, all[i])
    end
  end
  return total, (oldest or now) + 60 - now
end
local spent = redis.call('GET', KEYS[3]) or '0'
local budget = ARGV[3]
if budget ~= '' and (#spent > #budget or (#spent == #budget and spent >= budget)) then
  return {3, 0, 0, spent}
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if rpm > 0 then
  local used, after = window(KEYS[1])
  if used >= rpm then return {1, used, after, spent} end
end
if tpm > 0 then
  local used, after = window(KEYS[2])
  if used >= tpm then return {2, used, after, spent} end
end
redis.call('HINCRBY', KEYS[1], now, 1)
redis.call('EXPIRE', KEYS[1], 120)
return {0, 0, 0, spent}
"#;

/// A finished request's charge: KEYS = spent, tokens; ARGV = cost units, tokens.
const CHARGE: &str = r#"
local now = redis.call('TIME')[1]
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', KEYS[2], now, ARGV[2])
  redis.call('EXPIRE', KEYS[2], 120)
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"#;

/// Runs `task` on the current runtime: a write to the shared state that the answer does
/// not wait for.
pub(crate) fn in_background(task: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn(task)),
        Err(_) => tracing::warn!("no runtime to write the shared state from"),
    }
}

/// Why Redis did not answer.
#[derive(Debug, thiserror::Error)]
#[error("the shared state (Redis) is unavailable: {0}")]
pub struct Unavailable(String);

impl From<redis::RedisError> for Unavailable {
    fn from(e: redis::RedisError) -> Unavailable {
        Unavailable(e.to_string())
    }
}

/// A connection to the fleet's Redis (it reconnects by itself after a failure).
#[derive(Clone)]
pub struct Fleet {
    conn: ConnectionManager,
    prefix: String,
    admit: redis::Script,
    charge: redis::Script,
}

impl Fleet {
    /// Connects to `url` (`redis://host:port/db`); fails when Redis does not answer within
    /// `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Fleet, Unavailable> {
        let client = redis::Client::open(url)?;
        let config =
            redis::aio::ConnectionManagerConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout)).set_number_of_retries(1);
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| Unavailable(format!("no answer from {url} within {timeout:?}")))??;
        Ok(Fleet { conn, prefix: prefix.to_string(), admit: redis::Script::new(ADMIT), charge: redis::Script::new(CHARGE) })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// Admits a request for key `name` under `limits` (counting it), or says why not.
    pub async fn admit(&self, name: &str, limits: &KeyLimits) -> Result<Result<(), Refusal>, Unavailable> {
        let mut conn = self.conn.clone();
        let (code, used, after, spent): (u8, u64, u64, String) = self
            .admit
            .key(self.key("requests", name))
            .key(self.key("tokens", name))
            .key(self.key("spent", name))
            .arg(limits.rpm.unwrap_or(0))
            .arg(limits.tpm.unwrap_or(0))
            .arg(limits.budget.map_or(String::new(), |b| b.0.to_string()))
            .invoke_async(&mut conn)
            .await?;
        let spent = Cost(spent.parse::<u128>().map_err(|_| Unavailable(format!("`{}` holds `{spent}`, not a spend", self.key("spent", name))))?);
        let retry_after = Some(Duration::from_secs(after.max(1)));
        Ok(match code {
            1 => Err(Refusal {
                message: format!("key `{name}` is over its rate limit of {} requests per minute (across the fleet)", limits.rpm.unwrap_or(0)),
                retry_after,
            }),
            2 => Err(Refusal {
                message: format!("key `{name}` is over its rate limit of {} tokens per minute ({used} used across the fleet)", limits.tpm.unwrap_or(0)),
                retry_after,
            }),
            3 => Err(Refusal {
                message: format!(
                    "key `{name}` has spent its budget of {} ({} spent across the fleet)",
                    limits.budget.unwrap_or(Cost::ZERO).decimal(),
                    spent.decimal()
                ),
                retry_after: None,
            }),
            _ => Ok(()),
        })
    }

    /// Adds a finished request's cost and tokens to key `name`.
    pub async fn charge(&self, name: &str, cost: Cost, tokens: u64) -> Result<(), Unavailable> {
        let units = i64::try_from(cost.0).map_err(|_| Unavailable(format!("a cost of {} does not fit Redis's integers", cost.decimal())))?;
        let mut conn = self.conn.clone();
        let _: i64 = self.charge.key(self.key("spent", name)).key(self.key("tokens", name)).arg(units).arg(tokens).invoke_async(&mut conn).await?;
        Ok(())
    }

    /// The key's spend so far, across the fleet.
    pub async fn spent(&self, name: &str) -> Result<Cost, Unavailable> {
        let mut conn = self.conn.clone();
        let v: Option<String> = redis::cmd("GET").arg(self.key("spent", name)).query_async(&mut conn).await?;
        Ok(Cost(v.and_then(|s| s.parse().ok()).unwrap_or(0)))
    }

    fn cache_key(&self, key: &CacheKey) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.key("cache", &hex)
    }

    /// A cached answer; `None` on a miss, or a value that is not JSON.
    pub async fn cache_get(&self, key: &CacheKey) -> Result<Option<std::sync::Arc<serde_json::Value>>, Unavailable> {
        let mut conn = self.conn.clone();
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(self.cache_key(key)).query_async(&mut conn).await?;
        Ok(v.and_then(|b| serde_json::from_slice(&b).ok()).map(std::sync::Arc::new))
    }

    pub async fn cache_put(&self, key: &CacheKey, value: &serde_json::Value, ttl: Duration) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        let bytes = serde_json::to_vec(value).map_err(|e| Unavailable(e.to_string()))?;
        let ms = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let () = redis::cmd("SET").arg(self.cache_key(key)).arg(bytes).arg("PX").arg(ms).query_async(&mut conn).await?;
        Ok(())
    }
}
