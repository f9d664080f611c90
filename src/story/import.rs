//! Importing a reference photo as a new character.
//!
//! The user's file is read, validated by decoding it (size limit, EXIF orientation), then copied
//! byte-for-byte into the project's `assets/photos/`; the original is never modified. Runs off
//! the UI thread (decoding a large JPEG takes a while).

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use super::assets::{sanitize_file_stem, AssetError};
use super::character::{Character, CharacterId, CropRect, TAG_COLOURS};
use super::persist::{atomic_write, unique_asset};
use crate::imaging::{decode_image_bytes, DecodeError, Mask};

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("could not read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{name}: {source}")]
    Decode { name: String, source: DecodeError },
    #[error("could not copy the photo into the project: {0}")]
    Copy(std::io::Error),
    #[error(transparent)]
    Asset(#[from] AssetError),
}

/// A photo ready to become a character: the copied asset and the decoded upright pixels.
pub struct ImportedPhoto {
    pub character: Character,
    pub pixels: Arc<image::RgbaImage>,
}

/// Reads `source`, validates it and copies it into `root/assets/photos/`. `id` and `colour_index`
/// come from the document (allocated by the caller on the UI thread).
pub fn import_photo(
    root: &Path,
    source: &Path,
    id: CharacterId,
    colour_index: usize,
) -> Result<ImportedPhoto, ImportError> {
    let bytes =
        std::fs::read(source).map_err(|e| ImportError::Read { path: source.display().to_string(), source: e })?;
    let file_name = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "photo".into());
    import_photo_bytes(root, &bytes, &file_name, id, colour_index)
}

/// [`import_photo`] for bytes already in memory (drag-and-drop from a browser gives bytes only).
pub fn import_photo_bytes(
    root: &Path,
    bytes: &[u8],
    file_name: &str,
    id: CharacterId,
    colour_index: usize,
) -> Result<ImportedPhoto, ImportError> {
    let decoded =
        decode_image_bytes(bytes).map_err(|source| ImportError::Decode { name: file_name.to_string(), source })?;
    let stem = sanitize_file_stem(file_name);
    let photo = unique_asset(root, "photos", &format!("{}-{stem}", id.0), decoded.format.extension())?;
    let target = photo.resolve_for_write(root)?;
    atomic_write(&target, bytes).map_err(ImportError::Copy)?;
    let mask_file = unique_asset(root, "masks", &format!("{}-mask", id.0), "png")?;
    let size = [decoded.rgba.width(), decoded.rgba.height()];
    let name = humanize(file_name);
    let character = Character {
        id,
        name,
        colour: TAG_COLOURS[colour_index % TAG_COLOURS.len()],
        photo,
        photo_size: size,
        crop: CropRect::full(size),
        mask_file,
        // The whole photo until the artist paints a mask: a usable start, clearly shown.
        mask: Arc::new(Mask::filled(size[0], size[1], 255)),
        face: None,
        notes: String::new(),
    };
    Ok(ImportedPhoto { character, pixels: Arc::new(decoded.rgba) })
}

/// "IMG_2041-final" → "IMG 2041 final": a readable default name the artist can change.
fn humanize(file_stem: &str) -> String {
    let s: String = file_stem.chars().map(|c| if c == '_' || c == '-' { ' ' } else { c }).collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() {
        "Character".into()
    } else {
        s.chars().take(40).collect()
    }
}
