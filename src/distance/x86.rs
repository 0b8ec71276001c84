//! x86-64 kernels, one file per level.

mod avx2;
mod avx512;

pub(super) use avx2::{
    bits_dot_popcnt, dot4_u4_i8_avx2, dot_avx2, dot_block_avx2, dot_h_avx2, dot_u4_i8_avx2,
    dot_u8_avx2, dot_u8_i16_avx2, dot_u8_i8_avx2, fastscan_avx2, l2sq_avx2, l2sq_h_avx2,
    widen_avx2,
};
pub(super) use avx512::{
    dot4_u4_i8_vnni, dot_avx512, dot_block_avx512, dot_u4_i8_vnni, dot_u8_avx512, dot_u8_i8_vnni,
    l2sq_avx512,
};
