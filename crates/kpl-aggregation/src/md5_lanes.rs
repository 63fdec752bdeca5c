//! MD5 of several messages at once, one message per lane.
//!
//! MD5 is one long chain of dependent steps, so hashing one message leaves most of a core's
//! arithmetic units idle. Hashing [`LANES`] messages side by side, each step done for every
//! lane in a row, gives the compiler loops over plain arrays that it turns into vector
//! instructions (SSE2 on any x86-64, NEON on aarch64), in safe Rust. Lanes whose message has
//! no more blocks keep their state while the others go on.

use std::array;

use wide::u32x8;

/// Messages hashed side by side.
pub(crate) const LANES: usize = 8;

type Lanes = [u32; LANES];

/// Per-step constants: the integer part of 2^32 × |sin(i + 1)|.
const SINES: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

const INITIAL: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The MD5 digest of each message, in order.
pub(crate) fn md5_many(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    let mut digests = Vec::with_capacity(messages.len());
    for group in messages.chunks(LANES) {
        digests.extend_from_slice(&md5_group(group)[..group.len()]);
    }
    digests
}

/// Blocks of `len` bytes once padded: the message, a 0x80 byte, zeros, and the length in bits.
fn padded_blocks(len: usize) -> usize {
    (len + 9).div_ceil(64)
}

/// Block `index` of `message` once padded.
fn padded_block(message: &[u8], index: usize, block: &mut [u8; 64]) {
    let start = index * 64;
    let end = message.len().min(start + 64);
    let taken = end.saturating_sub(start);
    block[..taken].copy_from_slice(&message[start.min(end)..end]);
    block[taken..].fill(0);
    if start + 64 > message.len() && start <= message.len() {
        block[message.len() - start] = 0x80;
    }
    if index + 1 == padded_blocks(message.len()) {
        let bits = (message.len() as u64).wrapping_mul(8);
        block[56..].copy_from_slice(&bits.to_le_bytes());
    }
}

/// The digests of up to [`LANES`] messages (the unused lanes' digests are of nothing).
fn md5_group(group: &[&[u8]]) -> [[u8; 16]; LANES] {
    let blocks: [usize; LANES] =
        array::from_fn(|lane| group.get(lane).map_or(0, |m| padded_blocks(m.len())));
    let mut state: [Lanes; 4] = array::from_fn(|i| [INITIAL[i]; LANES]);
    let mut block = [0u8; 64];
    let mut words = [[0u32; LANES]; 16];
    for index in 0..blocks.iter().copied().max().unwrap_or(0) {
        for (lane, message) in group.iter().enumerate() {
            if index < blocks[lane] {
                padded_block(message, index, &mut block);
                for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
                    word[lane] = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
            }
        }
        let before = state;
        compress(&mut state, &words);
        // Lanes already done keep their digest.
        for lane in 0..LANES {
            if index >= blocks[lane] {
                for (now, then) in state.iter_mut().zip(&before) {
                    now[lane] = then[lane];
                }
            }
        }
    }
    array::from_fn(|lane| {
        let mut digest = [0u8; 16];
        for (out, word) in digest.chunks_exact_mut(4).zip(&state) {
            out.copy_from_slice(&word[lane].to_le_bytes());
        }
        digest
    })
}

/// One MD5 step in every lane: `a = b + ((a + mix + sine + word) <<< SHIFT)`.
#[inline(always)]
fn step<const SHIFT: u32>(a: &mut u32x8, b: u32x8, mixed: u32x8, word: u32x8, sine: u32) {
    let sum = *a + mixed + u32x8::splat(sine) + word;
    *a = b + ((sum << SHIFT) | (sum >> (32 - SHIFT)));
}

/// One 64-byte block of every lane.
fn compress(state: &mut [Lanes; 4], words: &[Lanes; 16]) {
    let words: [u32x8; 16] = array::from_fn(|i| u32x8::from(words[i]));
    let [mut a, mut b, mut c, mut d] = state.map(u32x8::from);
    // Four steps at a time, the roles of a, b, c and d turning as MD5 defines.
    macro_rules! four_steps {
        ($mix:expr, $first:expr, $word:expr, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
            for group in 0..4 {
                let i = $first + 4 * group;
                step::<$s0>(&mut a, b, $mix(b, c, d), words[$word(i)], SINES[i]);
                step::<$s1>(&mut d, a, $mix(a, b, c), words[$word(i + 1)], SINES[i + 1]);
                step::<$s2>(&mut c, d, $mix(d, a, b), words[$word(i + 2)], SINES[i + 2]);
                step::<$s3>(&mut b, c, $mix(c, d, a), words[$word(i + 3)], SINES[i + 3]);
            }
        };
    }
    four_steps!(
        |b: u32x8, c: u32x8, d: u32x8| (b & c) | (!b & d),
        0,
        |i: usize| i,
        7,
        12,
        17,
        22
    );
    four_steps!(
        |b: u32x8, c: u32x8, d: u32x8| (d & b) | (!d & c),
        16,
        |i: usize| (5 * i + 1) % 16,
        5,
        9,
        14,
        20
    );
    four_steps!(
        |b: u32x8, c: u32x8, d: u32x8| b ^ c ^ d,
        32,
        |i: usize| (3 * i + 5) % 16,
        4,
        11,
        16,
        23
    );
    four_steps!(
        |b: u32x8, c: u32x8, d: u32x8| c ^ (b | !d),
        48,
        |i: usize| (7 * i) % 16,
        6,
        10,
        15,
        21
    );
    for (lanes, add) in state.iter_mut().zip([a, b, c, d]) {
        *lanes = (u32x8::from(*lanes) + add).to_array();
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_length_around_the_block_and_padding_edges_matches_md5() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let messages: Vec<&[u8]> = (0..=200).map(|len| &data[..len]).collect();
        let digests = md5_many(&messages);
        assert_eq!(digests.len(), messages.len());
        for (message, digest) in messages.iter().zip(&digests) {
            assert_eq!(
                digest[..],
                Md5::digest(message)[..],
                "length {}",
                message.len()
            );
        }
    }

    proptest! {
        #[test]
        fn any_messages_hash_as_md5_does(messages in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..400), 0..20)
        ) {
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let digests = md5_many(&slices);
            prop_assert_eq!(digests.len(), slices.len());
            for (message, digest) in slices.iter().zip(&digests) {
                prop_assert_eq!(&digest[..], &Md5::digest(message)[..]);
            }
        }
    }
}
