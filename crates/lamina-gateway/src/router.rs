//! Which deployments a request tries, in order: its route's deployments ordered by the
//! route's strategy (ejected backends last), then each fallback route's in turn
//! (breadth first, each route once). Routes whose context window is smaller than the
//! request are passed over, so an over-long prompt goes straight to a model with room.

use crate::config::{Config, Strategy};
use crate::health::BackendHealth;
use rand::Rng;
use std::time::Instant;

/// One deployment of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub route: usize,
    pub deployment: usize,
}

/// No route reachable from the requested one has a window for the prompt.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub estimate: u64,
    pub largest: u32,
}

/// Routes reachable from `route` through fallbacks, the route itself first.
pub fn route_chain(config: &Config, route: usize) -> Vec<usize> {
    let mut chain = vec![route];
    let mut i = 0;
    while i < chain.len() {
        for &f in &config.models[chain[i]].fallbacks {
            if !chain.contains(&f) {
                chain.push(f);
            }
        }
        i += 1;
    }
    chain
}

/// FNV-1a, 64 bits: the same on every gateway and every run (unlike std's hasher).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h = (h ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix (splitmix64's), so nearby inputs spread over the whole range.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The targets a request with an estimated `prompt_tokens` tries, in order. `affinity`
/// is the hash of the request's conversation start, for [`Strategy::PrefixAffinity`].
pub fn plan(
    config: &Config,
    health: &[BackendHealth],
    route: usize,
    prompt_tokens: u64,
    affinity: Option<u64>,
    now: Instant,
    rng: &mut impl Rng,
) -> Result<Vec<Target>, TooLong> {
    let mut out = Vec::new();
    let mut largest = 0;
    for r in route_chain(config, route) {
        let m = &config.models[r];
        if let Some(w) = m.context_window {
            largest = largest.max(w);
            if prompt_tokens > w as u64 {
                continue;
            }
        }
        let mut order: Vec<usize> = (0..m.deployments.len()).collect();
        let backend = |d: usize| &health[m.deployments[d].backend];
        match m.strategy {
            Strategy::Ordered => {}
            Strategy::Weighted => {
                // Efraimidis–Spirakis: sorting by u^(1/w) draws an order without replacement
                // in which each deployment comes first with probability w / Σw.
                let mut keyed: Vec<(f64, usize)> = order.iter().map(|&d| (rng.random::<f64>().powf(1.0 / m.deployments[d].weight as f64), d)).collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                order = keyed.into_iter().map(|(_, d)| d).collect();
            }
            Strategy::LeastBusy => order.sort_by_key(|&d| backend(d).in_flight()),
            Strategy::LowestLatency => order.sort_by_key(|&d| backend(d).latency().unwrap_or_default()),
            Strategy::PrefixAffinity => {
                // Highest random weight first: each deployment's score depends only on the
                // conversation and the deployment's own names.
                if let Some(h) = affinity {
                    let score = |d: usize| {
                        let dep = &m.deployments[d];
                        stable_hash(&[&h.to_le_bytes(), config.backends[dep.backend].name.as_bytes(), dep.model.as_bytes()])
                    };
                    order.sort_by_key(|&d| std::cmp::Reverse(score(d)));
                }
            }
        }
        // Stable: healthy first, each group in strategy order.
        order.sort_by_key(|&d| backend(d).is_ejected(now));
        out.extend(order.into_iter().map(|deployment| Target { route: r, deployment }));
    }
    if out.is_empty() {
        return Err(TooLong { estimate: prompt_tokens, largest });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthPolicy;
    use rand::SeedableRng;
    use std::path::Path;
    use std::time::Duration;

    const CONFIG: &str = r#"
[[backend]]
name = "a"
kind = "lamina"
url = "http://127.0.0.1:1/v1"
[[backend]]
name = "b"
kind = "openai"
url = "http://127.0.0.1:2/v1"
[[model]]
name = "small"
context_window = 100
strategy = "weighted"
deployments = [{ backend = "a", model = "m", weight = 3 }, { backend = "b", model = "m", weight = 1 }]
fallbacks = ["big"]
[[model]]
name = "big"
context_window = 1000
deployments = [{ backend = "b", model = "m2" }]
"#;

    #[test]
    fn weights_set_how_often_each_deployment_goes_first() {
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first_a = 0;
        for _ in 0..4000 {
            let p = plan(&c, &health, 0, 10, None, Instant::now(), &mut rng).unwrap();
            assert_eq!(p.len(), 3);
            assert_eq!(p[2], Target { route: 1, deployment: 0 });
            first_a += (p[0].deployment == 0) as usize;
        }
        // Expected 3000 of 4000; the binomial standard deviation is 27.
        assert!((2850..=3150).contains(&first_a), "{first_a}");
    }

    #[test]
    fn ejected_backends_go_last_and_long_prompts_skip_small_windows() {
        let mut c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        c.models[0].strategy = Strategy::Ordered;
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        let now = Instant::now();
        health[0].failure(&HealthPolicy { failures: 1, cooldown: Duration::from_secs(60) }, now);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = plan(&c, &health, 0, 10, None, now, &mut rng).unwrap();
        assert_eq!(p.iter().map(|t| (t.route, t.deployment)).collect::<Vec<_>>(), vec![(0, 1), (0, 0), (1, 0)]);
        let p = plan(&c, &health, 0, 500, None, now, &mut rng).unwrap();
        assert_eq!(p, vec![Target { route: 1, deployment: 0 }]);
        assert_eq!(plan(&c, &health, 0, 5000, None, now, &mut rng).unwrap_err(), TooLong { estimate: 5000, largest: 1000 });
    }

    #[test]
    fn prefix_affinity_keeps_a_conversation_on_one_deployment_and_spreads_the_rest() {
        let text = CONFIG.replace("strategy = \"weighted\"", "strategy = \"prefix-affinity\"");
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let now = Instant::now();
        let first = |h: u64, health: &[BackendHealth]| plan(&c, health, 0, 10, Some(h), now, &mut rand::rngs::StdRng::seed_from_u64(h)).unwrap()[0];
        // The same conversation always goes to the same deployment, whatever the draw.
        for h in 0..50u64 {
            let t = first(h, &health);
            for _ in 0..5 {
                assert_eq!(plan(&c, &health, 0, 10, Some(h), now, &mut rng).unwrap()[0], t);
            }
        }
        // Conversations spread evenly: 2000 of them over 2 deployments, 1000 ± 3 sd (22).
        let on_a = (0..2000u64).filter(|&h| first(h, &health).deployment == 0).count();
        assert!((934..=1066).contains(&on_a), "{on_a}");
        // An ejected deployment's conversations move; the others stay where they were.
        let ejected: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        ejected[1].failure(&HealthPolicy { failures: 1, cooldown: Duration::from_secs(60) }, now);
        for h in 0..200u64 {
            let before = first(h, &health);
            let after = first(h, &ejected);
            assert_eq!(after.deployment, 0);
            if before.deployment == 0 {
                assert_eq!(after, before);
            }
        }
        // The hash is fixed: every gateway of a fleet computes the same one.
        assert_eq!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"ab", b"c"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }
}
