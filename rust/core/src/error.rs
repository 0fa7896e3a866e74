//! The one error type of the core. The binding maps each variant to a Python exception.

use thiserror::Error as ThisError;

#[derive(Debug, Clone, PartialEq, ThisError)]
pub enum Error {
    /// A caller-supplied argument is out of its domain; `name` is the argument's name.
    #[error("{name}: {msg}")]
    InvalidArgument { name: &'static str, msg: String },
    /// Two arrays that must agree in shape do not.
    #[error("{name}: expected shape {expected}, got {got}")]
    Shape {
        name: &'static str,
        expected: String,
        got: String,
    },
    /// A linear system that should always be solvable was not (non-finite parameters).
    #[error("singular or non-finite matrix in {0}")]
    Singular(&'static str),
    /// Training produced a non-finite loss or parameter.
    #[error("training diverged in {stage} at iteration {iteration}: {msg}")]
    Diverged {
        stage: &'static str,
        iteration: usize,
        msg: String,
    },
    /// The caller's progress callback asked to stop (Ctrl-C from Python).
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(name: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            msg: msg.into(),
        }
    }

    pub fn shape(name: &'static str, expected: impl Into<String>, got: impl Into<String>) -> Self {
        Error::Shape {
            name,
            expected: expected.into(),
            got: got.into(),
        }
    }
}
