//! Decoding internal-API answers as Go's `encoding/json` does (docs/api-json.md, behaviour
//! §3.3): error bodies, `null` answers and fields, non-object bodies.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Error, Reply};

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    message: String,
}

/// behaviour §3.3: the JSON `message` (even empty, or `null`), else `Internal API error (<status>)`.
pub fn error_from_body(status: u16, body: &[u8]) -> Error {
    match go_json::<ErrorBody>(body) {
        Ok(parsed) => Error::Api {
            status,
            message: parsed.message,
        },
        Err(()) => Error::Status(status),
    }
}

/// Decodes a 2xx/3xx body as Go's `encoding/json` decodes it into a struct
/// (docs/api-json.md): `null` gives the default value, a `null` field its zero value, a body
/// that is not a JSON object (an array, a string…) `parsing failed`.
pub fn decode<T: DeserializeOwned + Default>(status: u16, body: &[u8]) -> Result<Reply<T>, Error> {
    go_json(body)
        .map(|body| Reply { status, body })
        .map_err(|()| Error::Parse)
}

/// The first JSON value of `body` (like Go's `json.Decoder.Decode`) decoded into a struct `T`
/// with Go's rules: only an object (or `null`: the zero value) decodes into a struct, and an
/// object member that is `null` leaves its field at its zero value. The nulls are removed
/// before serde sees the value, so every response struct gets this without per-field
/// attributes; all of them are `#[serde(default)]`.
pub(crate) fn go_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ()> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Null)) => Ok(T::default()),
        Some(Ok(mut value @ serde_json::Value::Object(_))) => {
            strip_nulls(&mut value);
            T::deserialize(value).map_err(|_| ())
        }
        _ => Err(()),
    }
}

/// Removes every object member whose value is `null`, at any depth (Go leaves such a field
/// untouched, i.e. at its zero value; serde would reject `null` for a `String` or `i64`).
fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_from_body(403, br#"{"message":"Forbidden!"}"#).to_string(),
            "Forbidden!"
        );
        assert_eq!(error_from_body(403, b"{}").to_string(), "");
        assert_eq!(
            error_from_body(404, b"").to_string(),
            "Internal API error (404)"
        );
        assert_eq!(
            error_from_body(404, b"<html>").to_string(),
            "Internal API error (404)"
        );
        assert_eq!(
            error_from_body(404, br#"{"message":3}"#).to_string(),
            "Internal API error (404)"
        );
    }

    #[test]
    fn decode_null_and_garbage() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct R {
            id: i64,
        }
        assert_eq!(decode::<R>(200, b"null").unwrap().body, R::default());
        assert_eq!(
            decode::<R>(200, br#"{"id":5,"x":1}"#).unwrap().body,
            R { id: 5 }
        );
        assert_eq!(decode::<R>(200, b"nope"), Err(Error::Parse));
        assert_eq!(decode::<R>(200, b""), Err(Error::Parse));
    }

    #[test]
    fn decode_is_go_about_nulls_and_non_objects() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct Inner {
            name: String,
        }
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct R {
            id: i64,
            key: String,
            list: Vec<String>,
            inner: Inner,
            flag: bool,
        }
        let all_null = br#"{"id":null,"key":null,"list":null,"inner":null,"flag":null}"#;
        assert_eq!(decode::<R>(200, all_null).unwrap().body, R::default());
        let nested = br#"{"id":3,"inner":{"name":null},"key":"k"}"#;
        assert_eq!(
            decode::<R>(200, nested).unwrap().body,
            R {
                id: 3,
                key: "k".into(),
                ..R::default()
            }
        );
        // Go refuses to decode anything but an object into a struct.
        for body in [&br#"[7,"ssh-ed25519 AAAA"]"#[..], b"7", br#""x""#, b"true"] {
            assert_eq!(decode::<R>(200, body), Err(Error::Parse), "{body:?}");
        }
        // Error bodies: a null message is an empty one.
        assert_eq!(
            error_from_body(403, br#"{"message":null}"#),
            Error::Api {
                status: 403,
                message: String::new()
            }
        );
        assert_eq!(error_from_body(403, b"null").to_string(), "");
        assert_eq!(error_from_body(403, b"[1]"), Error::Status(403));
    }
}
