//! Driving the real `StoryApp` headless with egui_kittest: the helpers the editor's UI tests share (each test
//! crate includes this with `mod app_harness;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Key, Modifiers};
use egui_kittest::Harness;
use storymaker::app_dirs::AppPaths;
use storymaker::ui::{AppEnv, NoDialogs, StoryApp};

/// How long [`step_until`] waits for background work (model loads, exports) before failing.
const WAIT: Duration = Duration::from_secs(120);

/// The app with its settings and data under `home`, opening `open` (the sample story when `None`), in a window
/// of `size` points, after the first photos have loaded.
pub fn harness(home: &Path, open: Option<PathBuf>, size: egui::Vec2) -> Harness<'static, StoryApp> {
    let paths = AppPaths::under(home);
    let mut h = Harness::builder()
        .with_size(size)
        .with_max_steps(16)
        .build_eframe(move |cc| StoryApp::new(cc, AppEnv { paths, dialogs: Arc::new(NoDialogs), open }));
    step_until(&mut h, "the photos to load", |a| !a.is_busy());
    h
}

/// Steps frames until `done` holds (background results arrive between frames), then settles.
pub fn step_until(h: &mut Harness<'static, StoryApp>, what: &str, done: impl Fn(&StoryApp) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run();
}

/// Ctrl+Z (Cmd+Z on macOS).
pub fn undo(h: &mut Harness<'static, StoryApp>) {
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
}

/// A primary click at a screen point with `modifiers` held through press and release, as a user does.
pub fn click_at(h: &mut Harness<'static, StoryApp>, at: egui::Pos2, modifiers: Modifiers) {
    if modifiers != Modifiers::NONE {
        h.event(egui::Event::ModifiersChanged(modifiers));
    }
    h.hover_at(at);
    h.run();
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton { pos: at, button: egui::PointerButton::Primary, pressed, modifiers });
        h.run();
    }
    if modifiers != Modifiers::NONE {
        h.event(egui::Event::ModifiersChanged(Modifiers::NONE));
        h.run();
    }
}
