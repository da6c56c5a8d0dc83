//! `lamina cost`: what one prompt costs on several models. Tokens are counted with each
//! model's own tokenizer where it is local (a built-in model, a .gguf file or a model
//! folder, named directly or as a gateway route's deployment), else estimated at 4 bytes a
//! token and marked so. Prices come from a gateway configuration's routes or `--price`;
//! the arithmetic is the gateway's own, exact to 1e-12.

use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_gateway::config::Config;
use lamina_gateway::price::{Price, Tokens};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CostArgs {
    /// The prompt, or a file that holds it.
    pub prompt: String,
    /// Models to compare, comma-separated: routes of --config, names given a --price, or
    /// local models (built-in names, .gguf files, folders).
    #[arg(long, value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// Completion tokens to price for each model.
    #[arg(long, default_value_t = 0)]
    pub output_tokens: u64,
    /// A gateway configuration: its routes' prices, and their deployments' models for the
    /// tokenizer.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A price per million tokens, NAME=INPUT/OUTPUT (e.g. `big=2.5/10`); overrides --config.
    #[arg(long = "price")]
    pub prices: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How a model's tokens were counted.
enum Counter {
    /// With this local model's tokenizer.
    Local(String),
    Estimate,
}

/// `NAME=INPUT/OUTPUT` (per million tokens; cached input at the input price).
pub(crate) fn parse_price(spec: &str) -> Result<(String, Price)> {
    let bad = || format!("--price `{spec}`: write NAME=INPUT/OUTPUT in the currency per million tokens, e.g. big=2.5/10");
    let (name, rest) = spec.split_once('=').with_context(bad)?;
    let (input, output) = rest.split_once('/').with_context(bad)?;
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).with_context(bad);
    let (input, output) = (number(input)?, number(output)?);
    let price = Price::per_million(input, input, output, output).map_err(|e| anyhow::anyhow!("--price `{spec}`: {e}"))?;
    Ok((name.trim().to_string(), price))
}

/// A local tokenizer's source: a built-in name or an existing model path.
fn local(spec: &str) -> bool {
    lamina_core::registry::find_builtin(spec).is_some() || Path::new(spec).exists()
}

fn count(spec: &str, text: &str) -> Result<u64> {
    let path = lamina_engine::resolve::resolve_model_path(Some(spec), &mut |m| eprintln!("{m}"))?;
    let tok = lamina_engine::resolve::load_tokenizer(&path)?;
    Ok(tok.encode(text, false)?.len() as u64)
}

pub fn run(args: CostArgs) -> Result<()> {
    let text = if Path::new(&args.prompt).is_file() {
        let bytes = std::fs::read(&args.prompt).with_context(|| format!("reading {}", args.prompt))?;
        String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{} is not UTF-8 text (byte {})", args.prompt, e.utf8_error().valid_up_to()))?
    } else {
        args.prompt.clone()
    };
    let config = match &args.config {
        Some(p) => Some(Config::load(p)?),
        None => None,
    };
    let given: Vec<(String, Price)> = args.prices.iter().map(|p| parse_price(p)).collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for name in &args.models {
        let route = config.as_ref().and_then(|c| c.route(name).map(|r| &c.models[r]));
        let price = match (given.iter().find(|(n, _)| n == name), route) {
            (Some((_, p)), _) => *p,
            (None, Some(r)) => r.price,
            (None, None) if local(name) => Price::default(),
            (None, None) => bail!(
                "no price for `{name}`: give --price {name}=INPUT/OUTPUT{}",
                if config.is_some() { ", or name a route of the configuration" } else { ", or a gateway --config whose route has one" }
            ),
        };
        // The tokenizer: the name itself, or the first local model among the route's deployments.
        let mut candidates = vec![name.clone()];
        if let Some(r) = route {
            candidates.extend(r.deployments.iter().map(|d| d.model.clone()));
        }
        let (counter, input) = match candidates.iter().find(|c| local(c)) {
            Some(spec) => (Counter::Local(spec.clone()), count(spec, &text).with_context(|| format!("counting tokens with {spec}"))?),
            None => (Counter::Estimate, text.len().div_ceil(4) as u64),
        };
        let tokens = Tokens { prompt: input, completion: args.output_tokens, ..Tokens::default() };
        let input_cost = price.cost(&Tokens { prompt: input, ..Tokens::default() });
        let output_cost = price.cost(&Tokens { completion: args.output_tokens, ..Tokens::default() });
        rows.push((name.clone(), counter, tokens, input_cost, output_cost, price.cost(&tokens)));
    }
    if args.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, counter, t, i, o, total)| {
                serde_json::json!({
                    "model": name,
                    "tokenizer": match counter { Counter::Local(s) => s.as_str(), Counter::Estimate => "estimate" },
                    "estimated": matches!(counter, Counter::Estimate),
                    "input_tokens": t.prompt,
                    "output_tokens": t.completion,
                    "input_cost": i.decimal(),
                    "output_cost": o.decimal(),
                    "cost": total.decimal(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<24} {:>13} {:>8} {:>14} {:>14} {:>14}  tokenizer", "model", "input tokens", "output", "input cost", "output cost", "total");
    for (name, counter, t, i, o, total) in &rows {
        let (mark, how) = match counter {
            Counter::Local(s) => ("", s.clone()),
            Counter::Estimate => ("≈", "estimate: 4 bytes a token".to_string()),
        };
        println!(
            "{:<24} {:>13} {:>8} {:>14} {:>14} {:>14}  {how}",
            name,
            format!("{mark}{}", t.prompt),
            t.completion,
            i.decimal(),
            o.decimal(),
            total.decimal()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_parsed_exactly_or_refused() {
        let (name, p) = parse_price("big=2.5/10").unwrap();
        assert_eq!((name.as_str(), p.input, p.output), ("big", 2_500_000, 10_000_000));
        for bad in ["big", "big=2.5", "big=x/1", "big=1/inf", "big=0.00000001/1"] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
    }
}
