//! Whisper model files: the CTranslate2 reader, the token table, and the converter to the
//! ggml file whisper.cpp loads (see [`ggml`]).
//!
//! Kept apart from vela-speech so setup can convert models without compiling candle or
//! whisper.cpp.

pub mod ct2;
pub mod ggml;
pub mod tokenizer;
