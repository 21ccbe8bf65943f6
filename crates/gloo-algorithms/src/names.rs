//! The enums that travel as wire ids and are spelled as names ([`Collective`],
//! [`Algorithm`], [`DType`]): one declaration per enum gives each variant its id and its
//! name together, so the id table, the name table and the list of every value cannot
//! disagree.
//!
//! [`Collective`]: crate::Collective
//! [`Algorithm`]: crate::Algorithm
//! [`DType`]: crate::DType

/// Declare a fieldless enum whose variants are `Variant = id => "name"`, with `ALL` (every
/// value in declaration order), `name`, `from_id`, `from_name` and `Display`.
macro_rules! named_ids {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $id:literal => $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $ty {
            $( $(#[$vmeta])* $variant = $id, )+
        }

        impl $ty {
            /// Every value, in wire-id order.
            pub const ALL: [$ty; [$($id),+].len()] = [$($ty::$variant),+];

            /// The name used in environment variables, messages and gloo-bench's flags.
            pub fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $name, )+
                }
            }

            /// The value with this wire id.
            pub fn from_id(id: u8) -> Option<$ty> {
                match id {
                    $( $id => Some($ty::$variant), )+
                    _ => None,
                }
            }

            /// The value with this [`name`](Self::name).
            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $( $name => Some($ty::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use named_ids;

#[cfg(test)]
mod tests {
    use crate::{Algorithm, Collective, DType};

    /// Every value of `all` maps to and from its id and name, ids rise, names differ.
    fn round_trips<T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display>(
        all: &[T],
        id: impl Fn(T) -> u8,
        name: impl Fn(T) -> &'static str,
        from_id: impl Fn(u8) -> Option<T>,
        from_name: impl Fn(&str) -> Option<T>,
    ) {
        let mut names = std::collections::HashSet::new();
        for (i, &v) in all.iter().enumerate() {
            assert_eq!(from_id(id(v)), Some(v));
            assert_eq!(from_name(name(v)), Some(v));
            assert_eq!(v.to_string(), name(v));
            assert!(names.insert(name(v)), "{v:?}: name {} twice", name(v));
            if i > 0 {
                assert!(id(all[i - 1]) < id(v), "ALL is not in wire-id order at {v:?}");
            }
        }
        let unused = (0..=u8::MAX).find(|i| all.iter().all(|v| id(*v) != *i)).unwrap();
        assert_eq!(from_id(unused), None);
        assert_eq!(from_name(""), None);
        assert_eq!(from_name(&name(all[0]).to_ascii_uppercase()), None, "names match exactly");
    }

    #[test]
    fn every_value_round_trips_through_its_id_and_name() {
        round_trips(
            &Collective::ALL,
            |v| v as u8,
            Collective::name,
            Collective::from_id,
            Collective::from_name,
        );
        round_trips(
            &Algorithm::ALL,
            |v| v as u8,
            Algorithm::name,
            Algorithm::from_id,
            Algorithm::from_name,
        );
        round_trips(&DType::ALL, |v| v as u8, DType::name, DType::from_id, DType::from_name);
        assert_eq!(DType::ALL.len(), 12);
        assert_eq!(DType::from_name("bf16"), Some(DType::BF16));
    }
}
