# Finds libtorch and defines the imported target lowrank::torch.
#
# Where: LOWRANK_TORCH_DIR (the `torch` package folder), else a TorchConfig.cmake on
# CMAKE_PREFIX_PATH (as given by `python3 -c 'import torch;print(torch.utils.cmake_prefix_path)'`),
# else the project's own .venv made by scripts/setup.
#
# CUDA: LOWRANK_CUDA=AUTO|ON|OFF. The PyPI wheel is a CUDA build even where no GPU exists;
# scripts/setup installs it without the CUDA library packages. AUTO therefore turns CUDA on
# only when libtorch has CUDA *and* its CUDA libraries (cuBLAS) are installed beside it or on
# the system, which is the case on a GPU machine with a full PyTorch install. With CUDA off
# lowrank links only libtorch_cpu and libc10, so nothing of the CUDA stack is loaded.
set(LOWRANK_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO, ON or OFF")
set_property(CACHE LOWRANK_CUDA PROPERTY STRINGS AUTO ON OFF)

if(NOT LOWRANK_TORCH_DIR)
  file(GLOB _venv_torch "${PROJECT_SOURCE_DIR}/.venv/lib/python3*/site-packages/torch")
  find_file(_torch_config TorchConfig.cmake
    PATHS ${CMAKE_PREFIX_PATH} ${_venv_torch}
    PATH_SUFFIXES Torch share/cmake/Torch
    NO_DEFAULT_PATH NO_CACHE)
  if(NOT _torch_config)
    message(FATAL_ERROR "libtorch not found: run scripts/setup, or pass "
      "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')")
  endif()
  get_filename_component(_cfg_dir "${_torch_config}" DIRECTORY)
  get_filename_component(LOWRANK_TORCH_DIR "${_cfg_dir}/../../.." ABSOLUTE)
endif()
set(LOWRANK_TORCH_DIR "${LOWRANK_TORCH_DIR}" CACHE PATH "The torch package folder (holds lib/ and include/)")

set(_has_cuda_lib FALSE)
if(EXISTS "${LOWRANK_TORCH_DIR}/lib/libtorch_cuda.so")
  file(GLOB _cublas "${LOWRANK_TORCH_DIR}/../nvidia/cublas/lib/libcublas.so*"
       "${LOWRANK_TORCH_DIR}/../nvidia/cu*/lib/libcublas.so*")
  find_library(_sys_cublas cublas NO_CACHE)
  if(_cublas OR _sys_cublas)
    set(_has_cuda_lib TRUE)
  endif()
endif()
if(LOWRANK_CUDA STREQUAL "AUTO")
  set(LOWRANK_WITH_CUDA ${_has_cuda_lib})
elseif(LOWRANK_CUDA)
  set(LOWRANK_WITH_CUDA TRUE)
else()
  set(LOWRANK_WITH_CUDA FALSE)
endif()

add_library(lowrank_torch INTERFACE)
add_library(lowrank::torch ALIAS lowrank_torch)
if(LOWRANK_WITH_CUDA)
  # Pick the GPU with -DCMAKE_CUDA_ARCHITECTURES (e.g. 90 for H100/H200; with it set
  # TORCH_CUDA_ARCH_LIST=9.0 in the environment too); CMake's default is the compiler's.
  enable_language(CUDA)
  # The kernels are C++20 like the rest (and Torch's CMake asks for that dialect); CMake 3.25 knows
  # no C++20 flag for nvcc, which has accepted -std=c++20 since CUDA 12.
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  find_package(Torch REQUIRED PATHS "${LOWRANK_TORCH_DIR}/share/cmake" NO_DEFAULT_PATH)
  target_link_libraries(lowrank_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(lowrank_torch INTERFACE LOWRANK_WITH_CUDA=1)
else()
  find_library(LOWRANK_TORCH_CPU_LIB torch_cpu PATHS "${LOWRANK_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(LOWRANK_C10_LIB c10 PATHS "${LOWRANK_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  # SYSTEM: libtorch's headers are not ours to keep warning-free.
  target_include_directories(lowrank_torch SYSTEM INTERFACE
    "${LOWRANK_TORCH_DIR}/include" "${LOWRANK_TORCH_DIR}/include/torch/csrc/api/include")
  target_link_libraries(lowrank_torch INTERFACE ${LOWRANK_TORCH_CPU_LIB} ${LOWRANK_C10_LIB})
  # The libraries find each other through their own RPATH ($ORIGIN); ours finds them here.
  set(CMAKE_BUILD_RPATH "${CMAKE_BUILD_RPATH};${LOWRANK_TORCH_DIR}/lib")
  set(CMAKE_INSTALL_RPATH "${CMAKE_INSTALL_RPATH};${LOWRANK_TORCH_DIR}/lib")
endif()
# at::parallel_for is a header template whose parallel part is an OpenMP pragma (libtorch's wheel
# uses the OpenMP backend), so code calling it runs on one thread unless it is compiled with
# OpenMP. Compile ours with -fopenmp and link the OpenMP runtime the wheel ships beside
# libtorch_cpu, so that one runtime (one thread pool, one at::set_num_threads) serves both.
file(GLOB _torch_gomp "${LOWRANK_TORCH_DIR}/lib/libgomp*.so*")
if(_torch_gomp)
  list(GET _torch_gomp 0 _torch_gomp)
  target_compile_options(lowrank_torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fopenmp>)
  target_link_libraries(lowrank_torch INTERFACE "${_torch_gomp}")
  set(LOWRANK_OPENMP TRUE)
else()
  set(LOWRANK_OPENMP FALSE)
endif()
message(STATUS "lowrank: libtorch at ${LOWRANK_TORCH_DIR} (CUDA: ${LOWRANK_WITH_CUDA}, OpenMP: ${LOWRANK_OPENMP})")
