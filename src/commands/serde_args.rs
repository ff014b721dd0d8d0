//! Serde helpers that let a stage's TOML spell a value as the command line does.

/// A list of paths written as one path or as a list (`data = "shards/train"` or
/// `data = ["a", "b"]`), as the command line takes one or more.
pub mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::PathBuf;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }

    /// Reads one path or a list of paths.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(
            match OneOrMany::deserialize(d)
                .map_err(|_| serde::de::Error::custom("expected a path or a list of paths"))?
            {
                OneOrMany::One(p) => vec![p],
                OneOrMany::Many(v) => v,
            },
        )
    }

    /// Writes the list (records compare lists, whatever the spelling).
    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// A value spelled as its `Display`/`FromStr` text, as on the command line (`--shard 0/4`,
/// a shell name).
pub mod display {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    /// Parses the text as the command line does.
    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }

    /// Writes the text.
    pub fn serialize<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// [`display`] for an optional value.
pub mod display_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    /// Parses the text as the command line does.
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }

    /// Writes the text, or nothing.
    pub fn serialize<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

/// An optional list of numbers written as a TOML array or as the command line's comma list
/// (`widths = [8, 16, 16, 16, 16, 32, 32]` or `widths = "8,16,16,16,16,32,32"`); written
/// back as an array.
pub mod comma_list_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt::Debug;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelling {
        Text(String),
        List(Vec<usize>),
    }

    /// Reads either spelling into `T` (a `Vec<usize>` or a fixed-size array).
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<Vec<usize>>,
        T::Error: Debug,
    {
        let list = match Option::<Spelling>::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a list of numbers"))?
        {
            None => return Ok(None),
            Some(Spelling::List(v)) => v,
            Some(Spelling::Text(s)) => s
                .split(',')
                .map(|p| p.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    serde::de::Error::custom(format!("{s:?} is not numbers separated by commas"))
                })?,
        };
        let n = list.len();
        T::try_from(list)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{n} numbers is the wrong count")))
    }

    /// Writes the list as an array.
    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}
