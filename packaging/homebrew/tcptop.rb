# Homebrew formula for tcptop: builds the macOS binary from source, with the
# man page and shell completions tcptop-gen writes from the clap definition.
#
# scripts/package writes dist/tcptop.rb from this file: the version in `url`
# and the sha256 of the source archive it makes (dist/tcptop-VERSION.tar.gz,
# `git archive` of HEAD, which writes the commit into tcptop/COMMIT for
# `tcptop --version`). A release publishes that archive at `url` and the
# formula in a tap. The address below is a placeholder until the project has
# a public one; `ruby -c` checks this file in scripts/package-test, a real
# `brew install --build-from-source` needs a Mac.
class Tcptop < Formula
  desc "Top-style, real-time monitor of network connections per process"
  homepage "https://example.org/tcptop"
  url "https://example.org/tcptop/releases/download/v0.1.0/tcptop-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  # User space: MIT or Apache-2.0. The Linux eBPF programs (not built on
  # macOS): MIT or GPL-2.0.
  license any_of: ["MIT", "Apache-2.0"]

  depends_on "rust" => :build

  def install
    # The Linux-only parts (eBPF programs and their loader) are cfg-gated:
    # on macOS tcptop builds its macOS backend only.
    system "cargo", "install", *std_cargo_args(path: "tcptop")
    system "cargo", "run", "--release", "--locked", "-p", "tcptop-gen", "--", buildpath/"gen"
    man1.install buildpath/"gen/tcptop.1"
    bash_completion.install buildpath/"gen/completions/tcptop.bash" => "tcptop"
    zsh_completion.install buildpath/"gen/completions/_tcptop"
    fish_completion.install buildpath/"gen/completions/tcptop.fish"
  end

  test do
    assert_match "tcptop #{version}", shell_output("#{bin}/tcptop --version")
    assert_match "--batch", shell_output("#{bin}/tcptop --help")
  end
end
