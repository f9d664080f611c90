//! StoryMaker Studio: an editor for illustrated stories whose characters stay the same from panel
//! to panel (SDXL + the StoryMaker character adapter).
//!
//! Rooms follow `shared/design/ARCHITECTURE.md`: the document (`story`) is edited by the UI (`ui`)
//! and snapshotted into immutable jobs for the worker thread (`engine`), which owns the models.

pub mod app_dirs;
pub mod cli;
pub mod engine;
pub mod export;
pub mod face;
pub mod imaging;
pub mod kernels;
pub mod models;
pub mod pipeline;
pub mod pose;
pub mod sampling;
pub mod story;
#[cfg(feature = "gui")]
pub mod ui;
pub mod weights;
