#!/usr/bin/env node
// The compiled CLI lives in dist/ (built by `npm ci` through the `prepare` script, or `npm run build`). dist/ mirrors
// the source tree (src/ → dist/src/, loaders/ → dist/loaders/), as tsc leaves relative import paths as written.
import { main } from '../dist/src/cli.js'

main(process.argv.slice(2)).then(code => { process.exitCode = code })
