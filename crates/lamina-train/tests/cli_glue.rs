//! Compiles the CLI glue (crates/lamina-cli/src/train_cmds.rs) and drives it end to end,
//! so it stays buildable even before it is wired into the `lamina` binary.

#[path = "../../lamina-cli/src/train_cmds.rs"]
#[allow(dead_code)]
mod train_cmds;

use clap::Parser;
use lamina_train::TrainConfig;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
enum Cmd {
    Tokenizer(train_cmds::TokenizerArgs),
    Pretrain(train_cmds::PretrainArgs),
    Plot(train_cmds::PlotArgs),
    Export(train_cmds::ExportArgs),
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("lamina").chain(args.iter().copied()))?;
    match cli.cmd {
        Cmd::Tokenizer(a) => train_cmds::run_tokenizer(a),
        Cmd::Pretrain(a) => train_cmds::run_pretrain(a),
        Cmd::Plot(a) => train_cmds::run_plot(a),
        Cmd::Export(a) => train_cmds::run_export(a),
    }
}

#[test]
fn every_config_key_has_a_flag() {
    assert_eq!(train_cmds::ConfigOverrides::KEYS, TrainConfig::KEYS);
}

#[test]
fn example_config_parses() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shakespeare_char.toml");
    let c = TrainConfig::from_toml_file(&p).unwrap();
    c.validate().unwrap();
    assert_eq!((c.block_size, c.batch_size, c.n_layer, c.n_head, c.n_embd, c.max_iters), (64, 12, 4, 4, 128, 2000));
}

#[test]
fn cli_commands_work_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let data = d.path().join("in.txt");
    std::fs::write(&data, "to be or not to be, that is the question.\n".repeat(30)).unwrap();
    let tok = d.path().join("new-folder").join("tok.json"); // the folder is created
    run(&["tokenizer", "train", "--vocab-size", "300", "--out", &s(&tok), &s(&data)]).unwrap();
    assert!(tok.exists());
    let run_dir = d.path().join("run");
    run(&[
        "pretrain",
        "--data",
        &s(&data),
        "--tokenizer",
        &s(&tok),
        "--out-dir",
        &s(&run_dir),
        "--arch",
        "llama",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "32",
        "--block-size",
        "8",
        "--batch-size",
        "2",
        "--max-iters",
        "4",
        "--stop-at",
        "2",
        "--eval-interval",
        "2",
        "--eval-iters",
        "1",
        "--sample-tokens",
        "3",
        "--progress",
        "false",
        "--set",
        "lr=2e-3",
    ])
    .unwrap();
    // Resume with no --config: the checkpoint's config, with --stop-at lifted.
    run(&["pretrain", "--resume", &s(&run_dir), "--set", "stop_at=4"]).unwrap();
    assert_eq!(std::fs::read_to_string(run_dir.join("latest")).unwrap().trim(), "step-000004");
    run(&["plot", &s(&run_dir.join("metrics.jsonl")), "--out", &s(&d.path().join("p.png"))]).unwrap();
    run(&["export", &s(&run_dir), "--format", "gguf", "--quant", "q8_0", "--out", &s(&d.path().join("m.gguf"))]).unwrap();
    run(&["export", &s(&run_dir), "--out", &s(&d.path().join("hf"))]).unwrap();
    assert!(d.path().join("hf/model.safetensors").exists());
    let e = run(&["pretrain", "--data", &s(&data), "--lr", "fast", "--dry-run"]).unwrap_err().to_string();
    assert!(e.contains("lr"), "{e}");
    let e = run(&["export", &s(&run_dir), "--quant", "q3", "--out", "x"]).unwrap_err().to_string();
    assert!(e.contains("unknown quantization"), "{e}");
}
