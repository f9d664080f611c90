//! UI frame time with a 100-panel story while a generation runs on the worker (issue 7): the UI
//! thread must never wait on the engine. Runs the real `StoryApp` headless (egui_kittest, CPU
//! rendering of the UI is not included: this measures our per-frame logic and layout) and reports
//! the median and maximum frame time, for a baseline idle run and for the run with a job going.
//!
//!     cargo bench --bench ui_frames

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use storymaker::app_dirs::{AppPaths, AppSettings};
use storymaker::story::{save_project, Panel, SeedChoice};
use storymaker::ui::{AppEnv, NoDialogs, StoryApp};

fn story_with_100_panels(dir: &Path) {
    let mut p = storymaker::story::sample::write_sample_story(dir).expect("sample story");
    p.characters[0].face.as_mut().expect("face").identity = Some(common::tiny_identity());
    let template: Panel = p.panels[0].clone();
    p.panels.clear();
    for i in 0..100 {
        let mut panel = template.clone();
        panel.id = storymaker::story::PanelId(p.alloc_id());
        panel.prompt = format!("{} (panel {i})", template.prompt);
        panel.params.width = 256;
        panel.params.height = 256;
        panel.params.steps = 60;
        panel.seed = SeedChoice::Fixed(i);
        p.panels.push(panel);
    }
    save_project(dir, &p).expect("save");
}

fn frames(h: &mut Harness<'static, StoryApp>, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            h.step();
            t.elapsed()
        })
        .collect()
}

fn report(label: &str, mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    let (median, max) = (ms(d[d.len() / 2]), ms(d[d.len() - 1]));
    println!("{label:32} frames {:4}  median {median:7.2} ms  max {max:7.2} ms", d.len());
    (median, max)
}

fn main() {
    let home = tempfile::tempdir().expect("temp dir");
    let models = home.path().join("models");
    common::tiny_sdxl(&models.join("sdxl"));
    common::tiny_adapter(&models);
    let paths = AppPaths::under(home.path());
    AppSettings { models_dir: Some(models), ..Default::default() }.save(&paths).expect("settings");
    let story = home.path().join("story");
    story_with_100_panels(&story);

    let mut h = Harness::builder()
        .with_size(egui::vec2(1600.0, 1000.0))
        .build_eframe(move |cc| StoryApp::new(cc, AppEnv { paths, dialogs: Arc::new(NoDialogs), open: Some(story) }));
    let start = Instant::now();
    while h.state().is_busy() && start.elapsed() < Duration::from_secs(60) {
        h.step();
    }
    assert_eq!(h.state().project().panels.len(), 100);
    // Warm up, then the idle baseline.
    frames(&mut h, 30);
    let (idle_median, _) = report("idle, 100 panels", frames(&mut h, 200));

    // Queue every panel: the worker is busy for the whole measurement.
    h.state_mut().generate_all();
    let id = h.state().project().panels[0].id;
    let t = Instant::now();
    while h.state().panel_status(id).is_none() && t.elapsed() < Duration::from_secs(30) {
        h.step();
    }
    let busy = frames(&mut h, 200);
    let still_running =
        (0..100).filter(|&i| h.state().panel_status(h.state().project().panels[i].id).is_some()).count();
    let (busy_median, busy_max) = report("generating (queue of 100 jobs)", busy);
    println!(
        "ratio busy/idle median: {:.2}  (jobs still queued or running after the run: {still_running})",
        busy_median / idle_median
    );
    println!("max frame while generating: {busy_max:.2} ms");
    let _ = h.get_by_label("Generate");
}
