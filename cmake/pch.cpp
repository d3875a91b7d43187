// Compiles the shared precompiled header once (see CMakeLists.txt).
