//! The conversion's plumbing: field paths, the error a field fails with, the "must be
//! default" check for fields the proxy does not implement, durations, wrappers, typed
//! configs and bounded lists.

use std::time::Duration;

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use super::limits::{MAX_LIST, MAX_NAME};

/// A field path inside a resource (`filter_chains[1].filters[0].typed_config`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Path(String);

/// A field that failed: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fail {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// What a conversion step returns.
pub(crate) type R<T> = Result<T, Fail>;

impl Path {
    /// The resource itself.
    pub(crate) fn root() -> Path {
        Path(String::new())
    }

    /// The field `name` of this message.
    pub(crate) fn f(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// The entry `i` of this list.
    pub(crate) fn i(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    /// The entry `key` of this map.
    pub(crate) fn key(&self, key: &str) -> Path {
        Path(format!("{}[{:?}]", self.0, shorten(key)))
    }

    /// This field is wrong because of `message`.
    pub(crate) fn err(&self, message: impl Into<String>) -> Fail {
        Fail {
            path: self.0.clone(),
            message: message.into(),
        }
    }

    /// This field is set but the proxy does not implement it.
    pub(crate) fn unsupported(&self) -> Fail {
        self.err("unsupported field (set, but rudder-proxy does not implement it)")
    }
}

/// Refuses each listed field of `$msg` that is not its default value, naming it.
macro_rules! must_be_default {
    ($path:expr, $msg:expr, $($field:ident),+ $(,)?) => {
        $(
            if !$crate::convert::check::is_default(&$msg.$field) {
                return Err($path.f(stringify!($field)).unsupported());
            }
        )+
    };
}
pub(crate) use must_be_default;

/// Whether `v` is its type's default (unset).
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `s` cut to 100 characters for an error message (values are untrusted).
pub(crate) fn shorten(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_string()
    } else {
        let cut: String = s.chars().take(100).collect();
        format!("{cut}...")
    }
}

/// A name: non-empty, at most [`MAX_NAME`] bytes.
pub(crate) fn name(path: &Path, s: &str) -> R<String> {
    if s.is_empty() {
        return Err(path.err("must not be empty"));
    }
    if s.len() > MAX_NAME {
        return Err(path.err(format!("longer than {MAX_NAME} bytes")));
    }
    Ok(s.to_string())
}

/// A name that may be empty, at most [`MAX_NAME`] bytes.
pub(crate) fn opt_name(path: &Path, s: &str) -> R<String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        name(path, s)
    }
}

/// A list of at most `max` entries.
pub(crate) fn bounded<'a, T>(path: &Path, list: &'a [T], max: usize) -> R<&'a [T]> {
    if list.len() > max {
        return Err(path.err(format!("{} entries, at most {max} accepted", list.len())));
    }
    Ok(list)
}

/// A list of at most [`MAX_LIST`] entries.
pub(crate) fn list<'a, T>(path: &Path, list: &'a [T]) -> R<&'a [T]> {
    bounded(path, list, MAX_LIST)
}

/// Converts each entry of a bounded list, with its indexed path.
pub(crate) fn each<T, U>(
    path: &Path,
    items: &[T],
    max: usize,
    mut f: impl FnMut(&Path, &T) -> R<U>,
) -> R<Vec<U>> {
    bounded(path, items, max)?
        .iter()
        .enumerate()
        .map(|(i, item)| f(&path.i(i), item))
        .collect()
}

/// A protobuf duration: non-negative, nanos in range.
pub(crate) fn duration(path: &Path, d: &PbDuration) -> R<Duration> {
    let secs = u64::try_from(d.seconds).map_err(|_| path.err("must not be negative"))?;
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| path.err("nanos out of range"))?;
    if secs > 315_576_000_000 {
        return Err(path.err("too long"));
    }
    Ok(Duration::new(secs, nanos))
}

/// An optional duration.
pub(crate) fn opt_duration(path: &Path, d: Option<&PbDuration>) -> R<Option<Duration>> {
    d.map(|d| duration(path, d)).transpose()
}

/// Unpacks a typed config of message type `T`: its type URL must be `T`'s.
pub(crate) fn unpack<T: Message + Name + Default>(path: &Path, any: &Any) -> R<T> {
    let want = T::type_url();
    if any.type_url != want {
        return Err(path.err(format!(
            "expected {want}, got unsupported type {}",
            shorten(&any.type_url)
        )));
    }
    T::decode(any.value.as_slice()).map_err(|e| path.err(format!("does not decode: {e}")))
}

/// Whether `any` has type `T` (without decoding).
pub(crate) fn is<T: Name>(any: &Any) -> bool {
    any.type_url == T::type_url()
}

/// An enum value known to prost, or an error naming the number.
pub(crate) fn enumerated<E: TryFrom<i32>>(path: &Path, v: i32) -> R<E> {
    E::try_from(v).map_err(|_| path.err(format!("unknown enum value {v}")))
}
