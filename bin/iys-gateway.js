#!/usr/bin/env node
// The compiled CLI lives in dist/ (built by `npm ci` through the `prepare` script, or `npm run build`).
import { main } from '../dist/cli.js'

main(process.argv.slice(2)).then(code => { process.exitCode = code })
