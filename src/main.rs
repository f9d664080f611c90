//! `storymaker [PROJECT_FOLDER]` opens the editor (the sample story on first run).

#[cfg(feature = "gui")]
use std::path::PathBuf;
#[cfg(feature = "gui")]
use std::sync::Arc;

#[cfg(feature = "gui")]
use storymaker::app_dirs::AppPaths;
#[cfg(feature = "gui")]
use storymaker::ui::{AppEnv, NativeDialogs, StoryApp};

const USAGE: &str = "StoryMaker Studio — illustrated stories with consistent characters

Usage:
  storymaker [PROJECT_FOLDER]   open the editor (the sample story on first run)
  storymaker bench unet|face|segment ...
                                time the SDXL UNet, face analysis or Auto mask (see `storymaker bench --help`)
  storymaker render PROJECT --out DIR [--panels 1,3] [--variants N] [--models DIR]
                                generate panels without the editor (see --help)
  storymaker tensor-check COMPONENT --weights W --inputs IN --out OUT
                                run one model component on given tensors (see --help)
  storymaker --help | --version
";

/// Runs a command-line subcommand; `None` when the arguments are for the GUI.
fn subcommand(args: &[String]) -> Option<std::process::ExitCode> {
    let (name, rest) = args.split_first()?;
    let run: fn(&storymaker::cli::args::Args) -> anyhow::Result<()> = match name.as_str() {
        "bench" => storymaker::cli::bench::run,
        "tensor-check" => storymaker::cli::tensor_check::run,
        "render" => storymaker::cli::render::run,
        _ => return None,
    };
    let result = storymaker::cli::args::Args::parse(rest).and_then(|a| run(&a));
    Some(match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storymaker {name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    })
}

fn main() -> std::process::ExitCode {
    let words: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(code) = subcommand(&words) {
        return code;
    }
    run_gui()
}

#[cfg(not(feature = "gui"))]
fn run_gui() -> std::process::ExitCode {
    eprint!("this storymaker was built without the `gui` feature: only the subcommands work\n\n{USAGE}");
    std::process::ExitCode::from(2)
}

#[cfg(feature = "gui")]
fn run_gui() -> std::process::ExitCode {
    let mut open = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("-h" | "--help") => {
                print!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            Some("-V" | "--version") => {
                println!("storymaker {}", env!("CARGO_PKG_VERSION"));
                return std::process::ExitCode::SUCCESS;
            }
            Some(a) if a.starts_with('-') => {
                eprint!("unknown option {a}\n\n{USAGE}");
                return std::process::ExitCode::from(2);
            }
            _ => open = Some(PathBuf::from(arg)),
        }
    }
    let Some(paths) = AppPaths::platform() else {
        eprintln!("storymaker: cannot find a home directory for settings and projects");
        return std::process::ExitCode::FAILURE;
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("StoryMaker Studio")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let result = eframe::run_native(
        "StoryMaker Studio",
        options,
        Box::new(move |cc| Ok(Box::new(StoryApp::new(cc, AppEnv { paths, dialogs: Arc::new(NativeDialogs), open })))),
    );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storymaker: could not open a window: {e}");
            eprintln!("StoryMaker Studio needs a graphical session (X11 or Wayland) with Vulkan, Metal, DX12 or GL.");
            std::process::ExitCode::FAILURE
        }
    }
}
