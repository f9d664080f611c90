//! The document an artist edits: characters, panels in timeline order, project settings.
//!
//! Everything here is plain data (serde) plus the undo history; file IO lives in [`persist`].
//! The UI owns one [`Project`] and changes it only through [`history::Edit`]s so every change
//! can be undone.

pub mod assets;
pub mod character;
pub mod history;
pub mod import;
pub mod migrate;
pub mod panel;
pub mod persist;
pub mod project;
pub mod sample;

pub use assets::{AssetError, AssetPath};
pub use character::{Character, CharacterId, CropRect, FaceBox, FaceSource};
pub use history::{Edit, History};
pub use panel::{CastSlot, CharacterBlend, GenParams, Panel, PanelId, SeedChoice, StyleLoraRef, Variant, MAX_CAST};
pub use persist::{load_project, save_project, ProjectError};
pub use project::{Project, ProjectSettings, FORMAT_VERSION};
