import { curveBackend, nobleBackend, useCurveBackend } from '../../src/crypto/curve/backend.ts';

/** The backends to run a suite against: the native addon (required here) and the noble fallback. */
export const nativeBackend = curveBackend();
if (nativeBackend.name !== 'native') {
  throw new Error(
    'the native secp256k1 backend did not load: `npm ci` should have installed the secp256k1 addon',
  );
}
export const backends = [nativeBackend, nobleBackend] as const;
export { useCurveBackend };
