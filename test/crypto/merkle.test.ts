import { sha256 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concatBytes, fromHex, toHex } from '../../src/crypto/bytes.ts';
import { isCryptoError } from '../../src/crypto/errors.ts';
import {
  decodeMerkleProof,
  encodeMerkleProof,
  type MerkleProof,
  MerkleTree,
  merkleLeafHash,
  merkleNodeHash,
  merklePathLength,
  merkleProof,
  merkleRoot,
  merkleRootFromProof,
  merkleRootOfLeafHashes,
  verifyMerkleProof,
} from '../../src/crypto/merkle.ts';

// RFC 6962 test vectors (certificate-transparency-go / transparency-dev/merkle testonly).
const CT_LEAVES = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map((h) => fromHex(h));
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
const CT_INCLUSION = [
  {
    index: 0,
    size: 8,
    siblings: [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  },
  {
    index: 5,
    size: 8,
    siblings: [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  },
  {
    index: 2,
    size: 3,
    siblings: ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'],
  },
  {
    index: 1,
    size: 5,
    siblings: [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  },
];

// RFC 6962 §2.1 MTH and PATH, written recursively as the RFC states them.
function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
function refRoot(d: readonly Uint8Array[]): Uint8Array {
  if (d.length === 0) return sha256(new Uint8Array(0));
  if (d.length === 1) return sha256(concatBytes(Uint8Array.of(0), d[0]!));
  const k = largestPowerOfTwoBelow(d.length);
  return sha256(concatBytes(Uint8Array.of(1), refRoot(d.slice(0, k)), refRoot(d.slice(k))));
}
function refPath(m: number, d: readonly Uint8Array[]): Uint8Array[] {
  if (d.length <= 1) return [];
  const k = largestPowerOfTwoBelow(d.length);
  return m < k
    ? [...refPath(m, d.slice(0, k)), refRoot(d.slice(k))]
    : [...refPath(m - k, d.slice(k)), refRoot(d.slice(0, k))];
}

const leavesOf = (n: number, tag = 0) =>
  Array.from({ length: n }, (_, i) => Uint8Array.of(tag, i & 0xff, i >> 8, i % 7));
const flip = (b: Uint8Array, i = 0) => {
  const out = Uint8Array.from(b);
  out[i] = out[i]! ^ 1;
  return out;
};
const merkleError = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return isCryptoError(err, 'MERKLE_INVALID') ? err.message : `other error: ${String(err)}`;
  }
  return 'no error';
};

describe('Merkle tree (RFC 6962 shape)', () => {
  it('reproduces the Certificate Transparency roots for sizes 0..8', () => {
    for (let n = 0; n <= CT_LEAVES.length; n++) {
      expect(toHex(merkleRoot(CT_LEAVES.slice(0, n))), `size ${n}`).toBe(CT_ROOTS[n]);
      expect(toHex(MerkleTree.fromLeaves(CT_LEAVES.slice(0, n)).root)).toBe(CT_ROOTS[n]);
    }
    expect(toHex(merkleLeafHash(new Uint8Array(0)))).toBe(CT_ROOTS[1]);
    expect(
      toHex(merkleNodeHash(merkleLeafHash(CT_LEAVES[0]!), merkleLeafHash(CT_LEAVES[1]!))),
    ).toBe(CT_ROOTS[2]);
  });

  it('reproduces the Certificate Transparency inclusion proofs', () => {
    for (const v of CT_INCLUSION) {
      const leaves = CT_LEAVES.slice(0, v.size);
      const proof = merkleProof(leaves, v.index);
      expect(proof.siblings.map(toHex)).toEqual(v.siblings);
      expect(verifyMerkleProof(fromHex(CT_ROOTS[v.size]!), CT_LEAVES[v.index]!, proof)).toBe(true);
    }
  });

  it('matches the recursive RFC definition of roots and paths for sizes 0..48', () => {
    const all = leavesOf(48);
    for (let n = 0; n <= 48; n++) {
      const leaves = all.slice(0, n);
      const tree = MerkleTree.fromLeaves(leaves);
      expect(tree.root).toEqual(refRoot(leaves));
      expect(merkleRootOfLeafHashes(leaves.map(merkleLeafHash))).toEqual(tree.root);
      expect(MerkleTree.fromLeafHashes(leaves.map(merkleLeafHash)).root).toEqual(tree.root);
      for (let i = 0; i < n; i++) {
        const proof = tree.proof(i);
        expect(proof.siblings).toEqual(refPath(i, leaves));
        expect(merklePathLength(i, n)).toBe(proof.siblings.length);
      }
    }
  });

  it('verifies every index for every size 1..33 over random leaves', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 48 }), { minLength: 1, maxLength: 33 }),
        (leaves) => {
          const tree = MerkleTree.fromLeaves(leaves);
          const root = merkleRoot(leaves);
          expect(tree.root).toEqual(root);
          leaves.forEach((leaf, i) => {
            const proof = tree.proof(i);
            expect(verifyMerkleProof(root, leaf, proof)).toBe(true);
            expect(decodeMerkleProof(encodeMerkleProof(proof))).toEqual(proof);
          });
        },
      ),
      { numRuns: 150 },
    );
    // And each size for certain, not only where the generator happens to land.
    for (let n = 1; n <= 33; n++) {
      const leaves = leavesOf(n, 1);
      const root = merkleRoot(leaves);
      for (let i = 0; i < n; i++) {
        expect(verifyMerkleProof(root, leaves[i]!, merkleProof(leaves, i))).toBe(true);
      }
    }
  });

  it('rejects another leaf, another index, another root and a changed sibling list', () => {
    for (const n of [2, 3, 5, 8, 13, 33]) {
      const leaves = leavesOf(n, 2);
      const tree = MerkleTree.fromLeaves(leaves);
      const root = tree.root;
      for (let i = 0; i < n; i++) {
        const proof = tree.proof(i);
        const leaf = leaves[i]!;
        const other = (i + 1) % n;
        expect(verifyMerkleProof(root, leaves[other]!, proof)).toBe(false);
        expect(verifyMerkleProof(root, flip(leaf), proof)).toBe(false);
        expect(verifyMerkleProof(root, leaf, { ...proof, index: other })).toBe(false);
        expect(verifyMerkleProof(flip(root, 31), leaf, proof)).toBe(false);
        expect(verifyMerkleProof(merkleRoot(leaves.slice(0, n - 1)), leaf, proof)).toBe(false);
        const { siblings } = proof;
        expect(verifyMerkleProof(root, leaf, { ...proof, siblings: siblings.slice(1) })).toBe(
          false,
        );
        expect(verifyMerkleProof(root, leaf, { ...proof, siblings: siblings.slice(0, -1) })).toBe(
          false,
        );
        expect(verifyMerkleProof(root, leaf, { ...proof, siblings: [...siblings, root] })).toBe(
          false,
        );
        expect(verifyMerkleProof(root, leaf, { ...proof, siblings: [root, ...siblings] })).toBe(
          false,
        );
        siblings.forEach((_, k) => {
          const changed = siblings.map((s, j) => (j === k ? flip(s, 7) : s));
          expect(verifyMerkleProof(root, leaf, { ...proof, siblings: changed })).toBe(false);
        });
      }
    }
  });

  it('does not accept an inner node as a leaf (second preimage)', () => {
    const leaves = leavesOf(4, 3);
    const tree = MerkleTree.fromLeaves(leaves);
    const root = tree.root;
    const [l0, l1, l2, l3] = leaves.map(merkleLeafHash) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    const left = merkleNodeHash(l0, l1);
    const right = merkleNodeHash(l2, l3);
    expect(merkleNodeHash(left, right)).toEqual(root);
    // Without the prefixes, "left child || right child" at index 0 of a 2-leaf tree would pass.
    const forged = { index: 0, size: 2, siblings: [right] };
    expect(verifyMerkleProof(root, concatBytes(l0, l1), forged)).toBe(false);
    expect(verifyMerkleProof(root, left, forged)).toBe(false);
    expect(
      verifyMerkleProof(root, concatBytes(left, right), { index: 0, size: 1, siblings: [] }),
    ).toBe(false);
    // The inner node hash itself does lead to the root, which is why the leaf prefix matters.
    expect(merkleRootFromProof(left, forged)).toEqual(root);
  });

  it('binds the size only through the root, as documented', () => {
    const leaves = leavesOf(3, 6);
    const proof = merkleProof(leaves, 0);
    const root3 = merkleRoot(leaves);
    expect(verifyMerkleProof(root3, leaves[0]!, { ...proof, size: 4 })).toBe(true);
    expect(verifyMerkleProof(merkleRoot(leavesOf(4, 6)), leaves[0]!, { ...proof, size: 4 })).toBe(
      false,
    );
  });

  it('returns false, never throws, for malformed proofs and arguments', () => {
    const leaves = leavesOf(5, 4);
    const root = merkleRoot(leaves);
    const proof = merkleProof(leaves, 1);
    const bad: unknown[] = [
      null,
      undefined,
      42,
      {},
      { ...proof, index: -1 },
      { ...proof, index: 1.5 },
      { ...proof, index: 5 },
      { ...proof, index: '1' },
      { ...proof, size: 0 },
      { ...proof, size: 2 ** 32 },
      { ...proof, size: Number.NaN },
      { ...proof, siblings: 'nope' },
      { ...proof, siblings: [...proof.siblings.slice(1), new Uint8Array(31)] },
      { ...proof, siblings: [...proof.siblings.slice(1), null] },
    ];
    for (const p of bad) expect(verifyMerkleProof(root, leaves[1]!, p as MerkleProof)).toBe(false);
    expect(verifyMerkleProof(root.subarray(1), leaves[1]!, proof)).toBe(false);
    expect(verifyMerkleProof(root, 'leaf' as unknown as Uint8Array, proof)).toBe(false);
    expect(verifyMerkleProof(root, leaves[1]!, proof)).toBe(true);
  });

  it('rejects out-of-range proof requests', () => {
    expect(() => merkleProof([], 0)).toThrow(/outside a tree of 0/);
    expect(() => merkleProof(leavesOf(3), 3)).toThrow(/outside a tree of 3/);
    expect(() => MerkleTree.fromLeaves(leavesOf(3)).proof(-1)).toThrow(/outside/);
    expect(() => MerkleTree.fromLeafHashes([new Uint8Array(31)])).toThrow(/32 bytes/);
  });

  it('bounds the path length by 32 for the largest tree a proof can describe', () => {
    expect(merklePathLength(0, 1)).toBe(0);
    expect(merklePathLength(0, 2 ** 32 - 1)).toBe(32);
    expect(merklePathLength(2 ** 32 - 2, 2 ** 32 - 1)).toBe(31);
    expect(merklePathLength(2 ** 31, 2 ** 31 + 1)).toBe(1);
  });
});

describe('Merkle proof encoding', () => {
  const leaves = leavesOf(5, 5);
  const proof = merkleProof(leaves, 1); // three siblings
  const encoded = encodeMerkleProof(proof);
  const withHeader = (index: number, size: number, count: number, siblings: number) => {
    const out = new Uint8Array(9 + 32 * siblings);
    const view = new DataView(out.buffer);
    view.setUint32(0, index);
    view.setUint32(4, size);
    out[8] = count;
    return out;
  };

  it('is u32be index, u32be size, u8 count, then the siblings', () => {
    expect(encoded.length).toBe(9 + 3 * 32);
    expect(toHex(encoded.subarray(0, 9))).toBe('000000010000000503');
    expect(decodeMerkleProof(encoded)).toEqual(proof);
    expect(encodeMerkleProof(merkleProof([Uint8Array.of(1)], 0))).toEqual(withHeader(0, 1, 0, 0));
  });

  it.each([
    ['empty', new Uint8Array(0), /shorter than its 9-byte header/],
    ['a short header', encoded.subarray(0, 8), /shorter than its 9-byte header/],
    ['a truncated sibling', encoded.subarray(0, encoded.length - 1), /declares 3 siblings/],
    ['a trailing byte', concatBytes(encoded, Uint8Array.of(0)), /declares 3 siblings/],
    ['a missing sibling', encoded.subarray(0, encoded.length - 32), /declares 3 siblings/],
    ['size 0', withHeader(0, 0, 0, 0), /tree size must be an integer from 1/],
    ['index = size', withHeader(5, 5, 1, 1), /index 5 is outside a tree of size 5/],
    ['index > size', withHeader(9, 5, 1, 1), /index 9 is outside/],
    ['too few siblings for the path', withHeader(1, 5, 2, 2), /needs 3 siblings, got 2/],
    ['too many siblings for the path', withHeader(4, 5, 3, 3), /needs 1 siblings, got 3/],
    ['siblings for a one-leaf tree', withHeader(0, 1, 1, 1), /needs 0 siblings, got 1/],
  ])('decode rejects %s', (_, bytes, message) => {
    expect(merkleError(() => decodeMerkleProof(bytes))).toMatch(message);
  });

  it('encode rejects malformed proofs', () => {
    expect(
      merkleError(() => encodeMerkleProof({ ...proof, siblings: proof.siblings.slice(1) })),
    ).toMatch(/needs 3 siblings, got 2/);
    expect(merkleError(() => encodeMerkleProof({ ...proof, index: 7 }))).toMatch(/outside/);
  });

  it('decodes from a subarray with an offset', () => {
    const framed = concatBytes(Uint8Array.of(9, 9, 9), encoded);
    expect(decodeMerkleProof(framed.subarray(3))).toEqual(proof);
  });
});

describe('Merkle tree at ledger scale', () => {
  it('builds 100k leaves once and proves any leaf without rehashing', () => {
    const n = 100_000;
    const leaves = Array.from({ length: n }, (_, i) => {
      const b = new Uint8Array(40);
      new DataView(b.buffer).setUint32(0, i);
      return b;
    });
    const tree = MerkleTree.fromLeaves(leaves);
    const root = tree.root;
    for (const i of [0, 1, 65535, 65536, 99_998, n - 1]) {
      const proof = tree.proof(i);
      expect(proof.siblings.length).toBe(merklePathLength(i, n));
      expect(verifyMerkleProof(root, leaves[i]!, proof)).toBe(true);
    }
    expect(merkleRoot(leaves)).toEqual(root);
  });
});
