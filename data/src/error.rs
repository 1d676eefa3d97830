use std::path::PathBuf;

/// Errors name the file, and where it applies the episode and key, so a bad
/// dataset can be found and fixed without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: episode {episode}: key `{key}`: {msg}")]
    Invalid {
        path: PathBuf,
        episode: String,
        key: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, DataError>;
