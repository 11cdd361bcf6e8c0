// What the development tools' commands (`fake-carrier`, `fake-smsc`, `fake-smtp`) share: a usage error the CLI
// reports as such, and running until the user stops them.

/** An error with parseArgs' own code, so that the CLI reports it as a usage error (exit code 2). */
export function usage (message: string): Error {
  return Object.assign(new TypeError(message), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' })
}

/** Resolves at the first SIGTERM or SIGINT (and stops listening for them). */
export function untilStopped (): Promise<void> {
  return new Promise<void>(resolve => {
    const stop = (): void => {
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
      resolve()
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
}
