use core::fmt;

/// What went wrong, with the errno an ibverbs user would see beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbsError {
    /// EINVAL: an argument or attribute is not acceptable.
    InvalidArgument(String),
    /// ENOMEM: a queue or table is full.
    NoMemory(String),
    /// EBUSY: the object is still in use (an MR with work outstanding, a CQ with QPs…).
    Busy(String),
    /// ENOENT / ENODEV: no such device, port, index or key.
    NotFound(String),
    /// EACCES / EPERM: the caller may not do this (isolation policy, privileged Q_Key…).
    PermissionDenied(String),
    /// EDQUOT: a per-namespace resource limit was reached.
    LimitExceeded(String),
    /// EOPNOTSUPP.
    Unsupported(String),
    /// ETIMEDOUT.
    TimedOut,
    /// EIO: the device failed (its link went away…).
    Io(String),
}

impl VerbsError {
    pub fn errno(&self) -> i32 {
        match self {
            VerbsError::InvalidArgument(_) => 22,
            VerbsError::NoMemory(_) => 12,
            VerbsError::Busy(_) => 16,
            VerbsError::NotFound(_) => 2,
            VerbsError::PermissionDenied(_) => 13,
            VerbsError::LimitExceeded(_) => 122,
            VerbsError::Unsupported(_) => 95,
            VerbsError::TimedOut => 110,
            VerbsError::Io(_) => 5,
        }
    }
}

impl fmt::Display for VerbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerbsError::InvalidArgument(m) => write!(f, "invalid argument (EINVAL): {m}"),
            VerbsError::NoMemory(m) => write!(f, "out of resources (ENOMEM): {m}"),
            VerbsError::Busy(m) => write!(f, "busy (EBUSY): {m}"),
            VerbsError::NotFound(m) => write!(f, "not found (ENOENT): {m}"),
            VerbsError::PermissionDenied(m) => write!(f, "permission denied (EACCES): {m}"),
            VerbsError::LimitExceeded(m) => write!(f, "resource limit reached (EDQUOT): {m}"),
            VerbsError::Unsupported(m) => write!(f, "not supported (EOPNOTSUPP): {m}"),
            VerbsError::TimedOut => write!(f, "timed out (ETIMEDOUT)"),
            VerbsError::Io(m) => write!(f, "device error (EIO): {m}"),
        }
    }
}

impl std::error::Error for VerbsError {}

pub type Result<T> = core::result::Result<T, VerbsError>;
