/**
 * Import boundaries. The pure core (crypto, ledger rules, FHIR mapping, authorisation decisions)
 * computes; it never touches the outside world. IO lives at the edges (http, p2p, store, queue) and
 * is wired together in one composition root.
 */
const PURE = '^src/(crypto|ledger|mapping|authz)/';
const IO_NODE_MODULES =
  '^(node:)?(fs|fs/promises|net|http|https|http2|dgram|dns|child_process|cluster|worker_threads|os|tls|readline|process|v8|vm|inspector)$';

module.exports = {
  forbidden: [
    {
      name: 'pure-core-no-node-io',
      comment:
        'Pure modules may not import Node IO modules (node:crypto is computation and allowed).',
      severity: 'error',
      from: { path: PURE },
      to: { dependencyTypes: ['core'], path: IO_NODE_MODULES },
    },
    {
      name: 'pure-core-no-io-packages',
      comment: 'Pure modules may not import IO libraries (web, storage, queue, network, logging).',
      severity: 'error',
      from: { path: PURE },
      to: {
        path: 'node_modules/(fastify|level|classic-level|bullmq|ioredis|libp2p|@libp2p|@chainsafe|pino|undici|ws)',
      },
    },
    {
      name: 'pure-core-no-edges',
      comment: 'Pure modules may not import the IO edges of this project.',
      severity: 'error',
      from: { path: PURE },
      to: { path: '^src/(http|p2p|store|queue|node|cli|smart|fhir|main)' },
    },
    {
      name: 'no-gpl-oracle-in-src',
      comment: '@nucypher/umbral-pre is GPL-3.0: a test/bench oracle only, never shipped.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: 'node_modules/@nucypher/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
  },
};
