//! `storymaker bench unet` on the CPU with the tiny parity UNet config: the options the device checks use
//! (`--adapter`, `--profile`, `--kernels`) work and report what they did; bad values are refused.

use std::process::{Command, Output};

fn bench(extra: &[&str]) -> Output {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parity/unet.config.json");
    let mut args = vec!["bench", "unet", "--device", "cpu", "--size", "64", "--steps", "1", "--warmup", "0"];
    args.extend(["--config", config]);
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_storymaker")).args(&args).output().expect("run storymaker")
}

#[test]
fn adapter_and_profile_are_reported() {
    let o = bench(&["--adapter", "60", "--lora-rank", "4", "--profile", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    // The tiny config has 28 transformer blocks: an attn1 and an attn2 processor each.
    assert!(out.contains("adapter: 56 StoryMaker processors (LoRA rank 4), 60 image tokens"), "{out}");
    assert!(out.contains("kernels=reference +adapter (60 image tokens): mean"), "{out}");
    // The profile table lists the layer groups with their call counts per step.
    let row = |name: &str| out.lines().find(|l| l.trim_start().starts_with(name)).map(str::to_string);
    let sdpa = row("attn.sdpa").unwrap_or_else(|| panic!("no attn.sdpa row in {out}"));
    // attn1 and attn2 of 28 blocks plus the 28 decoupled image-token attentions.
    assert!(sdpa.contains(" 84 calls"), "{sdpa}");
    assert!(row("conv").is_some_and(|r| r.contains(" calls")), "{out}");
    assert!(out.contains("(outside scopes)"), "{out}");
}

#[test]
fn without_the_adapter_the_context_is_text_only() {
    let o = bench(&["--profile", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("adapter:"), "{out}");
    let sdpa = out.lines().find(|l| l.trim_start().starts_with("attn.sdpa")).unwrap_or_default();
    assert!(sdpa.contains(" 56 calls"), "{out}");
}

#[test]
fn bad_values_are_refused_with_the_option_named() {
    for (args, expect) in [
        (&["--adapter", "many"][..], "--adapter many"),
        (&["--kernels", "fast"][..], "--kernels must be fused or reference"),
    ] {
        let o = bench(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
