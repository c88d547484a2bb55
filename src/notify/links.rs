//! Signed acknowledge/resolve links. Placeholder: filled in by the links
//! work.
