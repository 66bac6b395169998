// Fails the check when npm scripts do not run on the Node the project targets (>= 22; the
// `node` devDependency puts Node 24 first on PATH for every npm script).
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  console.error(
    `node ${process.versions.node} is too old: this project targets Node 24 LTS (engines >= 22). ` +
      'Run through npm scripts (the `node` devDependency provides Node 24) or install Node 24.',
  );
  process.exit(1);
}
