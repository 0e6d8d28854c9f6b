// `flotilla`: the operators' CLI. Everything lives in FlotillaCLIKit (testable without a
// process); this only runs it and exits with its documented code.

import FlotillaCLIKit
#if canImport(Glibc)
import Glibc
#endif

exit(await CLIMain.run(Array(CommandLine.arguments.dropFirst())))
