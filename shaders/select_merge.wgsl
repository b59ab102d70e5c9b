// Merging for candidate selection (assembled after select.wgsl's shared part, with the
// SELECT_MERGE flag): each workgroup reduces up to 64 records of the previous level (64 · KMAX
// = ITEMS items) to one record. The engine runs levels until one record is left: the result.

struct Level {
    // Records in `prev`.
    n_in: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(2) var<uniform> level: Level;
@group(0) @binding(3) var<storage, read> prev: array<u32>;

const FAN_IN: u32 = ITEMS / KMAX;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = flat_group(wid, nwg);
    let first = g * FAN_IN;
    for (var e = 0u; e < E; e++) {
        let j = e * WG + lid;
        let r = first + j / KMAX;
        var key = 0u;
        var id = NONE;
        if (r < level.n_in) {
            key = prev[r * REC + j % KMAX];
            id = prev[r * REC + KMAX + j % KMAX];
        }
        item_key[e] = key;
        item_id[e] = id;
    }
    select_items(lid, g * REC);
    var state = vec2<f32>(LOWEST, 0.0);
    if (lid < FAN_IN && first + lid < level.n_in) {
        let r = first + lid;
        state = vec2<f32>(bitcast<f32>(prev[r * REC + 2u * KMAX]), bitcast<f32>(prev[r * REC + 2u * KMAX + 1u]));
    }
    softmax_write(lid, state, g * REC);
}
