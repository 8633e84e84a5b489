fn main() -> std::process::ExitCode {
    tcptop::main_entry()
}
