//! [`PerType`]: one value per xDS type, indexed by [`XdsType`], for per-type state that
//! would otherwise be a bare `[T; 5]` indexed by hand.

use std::ops::{Index, IndexMut};

use crate::kind::XdsType;

/// One `T` for each [`XdsType`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerType<T>([T; XdsType::COUNT]);

impl<T> PerType<T> {
    /// Builds each slot from its type.
    pub fn from_fn(mut f: impl FnMut(XdsType) -> T) -> Self {
        PerType(XdsType::ALL.map(&mut f))
    }

    /// The slots with their types, in push order.
    pub fn iter(&self) -> impl Iterator<Item = (XdsType, &T)> {
        XdsType::ALL.into_iter().zip(self.0.iter())
    }

    /// The slots with their types, in push order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (XdsType, &mut T)> {
        XdsType::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// The values, in push order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> Index<XdsType> for PerType<T> {
    type Output = T;

    fn index(&self, kind: XdsType) -> &T {
        &self.0[kind.index()]
    }
}

impl<T> IndexMut<XdsType> for PerType<T> {
    fn index_mut(&mut self, kind: XdsType) -> &mut T {
        &mut self.0[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_has_its_own_slot() {
        let mut per = PerType::from_fn(|t| t.short().to_string());
        per[XdsType::Route].push('!');
        assert_eq!(per[XdsType::Route], "RDS!");
        assert_eq!(per[XdsType::Cluster], "CDS");
        let order: Vec<XdsType> = per.iter().map(|(t, _)| t).collect();
        assert_eq!(order, XdsType::ALL);
    }
}
