//! CRC-32C (Castagnoli), the record checksum: the `crc32c` crate, which uses the CPU's
//! CRC instruction (SSE 4.2, ARMv8) when there is one and tables otherwise. Every
//! accepted message is checksummed once; with tables that was about 3.4 instructions
//! per byte, the largest single cost in the gateway's user space.

/// A running CRC-32C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    /// A fresh checksum.
    pub(crate) fn new() -> Self {
        Crc32c(0)
    }

    /// Adds `data`.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, data);
    }

    /// The checksum of everything added.
    pub(crate) fn finish(self) -> u32 {
        self.0
    }
}

/// CRC-32C of one slice.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut split = Crc32c::new();
        split.update(&data[..13]);
        split.update(&data[13..]);
        assert_eq!(split.finish(), crc32c(&data));
    }

    /// Spools written before the crate took over must still check: the same function as
    /// the bit-at-a-time definition, at every length and alignment around 8 bytes.
    #[test]
    fn matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x82F6_3B78
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..600u32).map(|i| (i * 131 + 17) as u8).collect();
        for start in 0..9 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 512, 591] {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), bitwise(d), "start {start} len {len}");
            }
        }
    }
}
