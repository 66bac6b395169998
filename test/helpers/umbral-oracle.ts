/**
 * rust-umbral 0.10 (npm @nucypher/umbral-pre, WASM) as a test oracle. GPL-3.0: loaded only by
 * tests and benchmarks, never by src/.
 */
import { createRequire } from 'node:module';

export type Oracle = typeof import('@nucypher/umbral-pre');

export const oracle: Oracle = createRequire(import.meta.url)('@nucypher/umbral-pre');
