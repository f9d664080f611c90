//! Pixels: decoding user photos safely, character masks, and (later) the reference's resize
//! and CLIP preprocessing filters.

pub mod character;
pub mod decode;
pub mod face_align;
pub mod mask;
pub mod segment;

pub use decode::{decode_image_bytes, load_image_file, DecodeError, DecodedImage};
pub use mask::{Mask, PixelRect};
