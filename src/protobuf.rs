//! The few parts of the protocol-buffer wire format that the TensorBoard event files and the
//! ONNX export write: a message is its fields' keys and values appended in order.
//!
//! Written by hand rather than with `prost`: both files are write-only here, a handful of
//! messages each, and prost would need the `.proto` files and a build script (or its derive
//! macros on hand-written structs, no shorter than this) for about forty lines of encoding.
//! The real readers (`tensorboard`, `onnx`, `onnxruntime`) check the output in pytest.

/// A message being encoded.
#[derive(Clone, Debug, Default)]
pub struct Msg(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    /// An empty message.
    pub fn new() -> Msg {
        Msg(Vec::new())
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An integer field (int32, int64, uint64, bool or enum); negative values as int64 does.
    pub fn int(mut self, field: u32, v: i64) -> Msg {
        self.key(field, 0);
        varint(&mut self.0, v as u64);
        self
    }

    /// A `double` field.
    pub fn double(mut self, field: u32, v: f64) -> Msg {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `float` field.
    pub fn float(mut self, field: u32, v: f32) -> Msg {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `bytes` or `string` field.
    pub fn bytes(mut self, field: u32, v: &[u8]) -> Msg {
        self.key(field, 2);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    /// A `string` field.
    pub fn string(self, field: u32, v: &str) -> Msg {
        self.bytes(field, v.as_bytes())
    }

    /// An embedded message field.
    pub fn msg(self, field: u32, m: &Msg) -> Msg {
        self.bytes(field, &m.0)
    }

    /// A packed `repeated int64` field.
    pub fn packed_ints(self, field: u32, vs: &[i64]) -> Msg {
        let mut body = Vec::new();
        for &v in vs {
            varint(&mut body, v as u64);
        }
        self.bytes(field, &body)
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The encoded bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_protobuf_spec_examples() {
        // From the encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing" is 12 07 ….
        assert_eq!(Msg::new().int(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
        assert_eq!(
            Msg::new().string(2, "testing").into_bytes(),
            b"\x12\x07testing"
        );
        // Negative int64: ten bytes, two's complement.
        assert_eq!(Msg::new().int(1, -1).into_bytes().len(), 11);
        // Packed repeated 3, 270, 86942 under field 4: 22 06 03 8E 02 9E A7 05.
        assert_eq!(
            Msg::new().packed_ints(4, &[3, 270, 86942]).into_bytes(),
            [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]
        );
        assert_eq!(
            Msg::new().float(1, 1.0).into_bytes(),
            [0x0d, 0, 0, 0x80, 0x3f]
        );
        assert_eq!(Msg::new().double(1, 1.0).into_bytes()[0], 0x09);
    }
}
