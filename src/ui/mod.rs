//! The eframe application and its views. The UI owns the document and talks to the engine only
//! through `Job`/`Event` values (ARCHITECTURE.md).

pub mod app;
mod auto_mask;
mod background;
mod bubble_editor;
mod character_editor;
mod characters;
pub mod export_dialog;
mod face_panel;
pub mod file_dialog;
mod images;
mod latent_view;
mod models_view;
pub mod overlay;
mod panel_editor;
mod pose_editor;
mod shortcuts;
mod timeline;

pub use app::{AppEnv, Selection, StoryApp};
pub use file_dialog::{FileDialog, NativeDialogs, NoDialogs};
