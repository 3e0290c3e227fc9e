"""Verbatim MIL texts written by the maderix/ANE generators (inmem_bench.m, training/stories_mil.h,
training/training_dynamic/mil_dynamic.h, ane_int8_bench.m), shared by tests as data."""

HEADER = (
    "program(1.3)\n"
    '[buildInfo = dict<string, string>({{"coremlc-component-MIL", "3510.2.1"}, '
    '{"coremlc-version", "3505.4.1"}, {"coremltools-component-milinternal", ""}, '
    '{"coremltools-version", "9.0"}})]\n'
    "{\n"
)
FOOTER = "}\n"

SEED_DYN_MATMUL = """\
    func main<ios18>(tensor<fp16, [1, 768, 1, 2304]> x) {
        tensor<int32, [4]> mm_ba = const()[name=string("mm_ba"), val=tensor<int32, [4]>([0,0,0,0])];
        tensor<int32, [4]> mm_sa = const()[name=string("mm_sa"), val=tensor<int32, [4]>([1,768,1,256])];
        tensor<fp16, [1,768,1,256]> mm_act = slice_by_size(x=x,begin=mm_ba,size=mm_sa)[name=string("mm_act")];
        tensor<int32, [4]> mm_bw = const()[name=string("mm_bw"), val=tensor<int32, [4]>([0,0,0,256])];
        tensor<int32, [4]> mm_sw = const()[name=string("mm_sw"), val=tensor<int32, [4]>([1,768,1,2048])];
        tensor<fp16, [1,768,1,2048]> mm_wt = slice_by_size(x=x,begin=mm_bw,size=mm_sw)[name=string("mm_wt")];
        tensor<int32, [4]> mm_ra = const()[name=string("mm_ra"), val=tensor<int32, [4]>([1,1,768,256])];
        tensor<fp16, [1,1,768,256]> mm_a2 = reshape(shape=mm_ra,x=mm_act)[name=string("mm_a2")];
        tensor<int32, [4]> mm_pm = const()[name=string("mm_pm"), val=tensor<int32, [4]>([0,1,3,2])];
        tensor<fp16, [1,1,256,768]> mm_a3 = transpose(perm=mm_pm,x=mm_a2)[name=string("mm_a3")];
        tensor<int32, [4]> mm_rw = const()[name=string("mm_rw"), val=tensor<int32, [4]>([1,1,768,2048])];
        tensor<fp16, [1,1,768,2048]> mm_W = reshape(shape=mm_rw,x=mm_wt)[name=string("mm_W")];
        bool bF = const()[name=string("bF"), val=bool(false)];
        tensor<fp16, [1,1,256,2048]> mm_yh = matmul(transpose_x=bF,transpose_y=bF,x=mm_a3,y=mm_W)[name=string("mm_yh")];
        tensor<fp16, [1,1,2048,256]> mm_yt = transpose(perm=mm_pm,x=mm_yh)[name=string("mm_yt")];
        tensor<int32, [4]> mm_ro = const()[name=string("mm_ro"), val=tensor<int32, [4]>([1,2048,1,256])];
        tensor<fp16, [1,2048,1,256]> mm_y = reshape(shape=mm_ro,x=mm_yt)[name=string("mm_y")];
    } -> (mm_y);
"""  # noqa: E501

SEED_EXAMPLE_A = """\
    func main<ios18>(tensor<fp32, [1, 256, 1, 64]> x) {
        string c_pad_type = const()[name = string("c_pad_type"), val = string("valid")];
        tensor<int32, [2]> c_strides = const()[name = string("c_strides"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> c_pad = const()[name = string("c_pad"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> c_dilations = const()[name = string("c_dilations"), val = tensor<int32, [2]>([1, 1])];
        int32 c_groups = const()[name = string("c_groups"), val = int32(1)];
        string to_fp16 = const()[name = string("to_fp16"), val = string("fp16")];
        tensor<fp16, [1, 256, 1, 64]> x16 = cast(dtype = to_fp16, x = x)[name = string("cast_in")];
        tensor<fp16, [256, 256, 1, 1]> W = const()[name = string("W"), val = tensor<fp16, [256, 256, 1, 1]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))];
        tensor<fp16, [1, 256, 1, 64]> y16 = conv(dilations = c_dilations, groups = c_groups, pad = c_pad, pad_type = c_pad_type, strides = c_strides, weight = W, x = x16)[name = string("conv")];
        string to_fp32 = const()[name = string("to_fp32"), val = string("fp32")];
        tensor<fp32, [1, 256, 1, 64]> y = cast(dtype = to_fp32, x = y16)[name = string("cast_out")];
    } -> (y);
"""  # noqa: E501

SEED_EXAMPLE_B = """\
    func main<ios18>(tensor<fp16, [1, 32000, 1, 256]> x) {
        int32 ax = const()[name=string("ax"), val=int32(1)];
        tensor<fp16, [1,32000,1,256]> out = softmax(axis=ax,x=x)[name=string("sm")];
    } -> (out);
"""

# ane_int8_bench's W8A8 chain with C = 64 and two layers: W_i at offset 64 + i * (64 + C^2).
SEED_INT8 = """\
    func main<ios18>(tensor<fp16, [1, 64, 64, 64]> x) {
        tensor<fp16, [64, 64, 1, 1]> W0 = constexpr_affine_dequantize()[axis = int32(0), name = string("W0"), quantized_data = tensor<int8, [64, 64, 1, 1]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64))), scale = fp16(0x1p-3), zero_point = int8(0)];
        tensor<fp16, [64, 64, 1, 1]> W1 = constexpr_affine_dequantize()[axis = int32(0), name = string("W1"), quantized_data = tensor<int8, [64, 64, 1, 1]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(4224))), scale = fp16(0x1p-3), zero_point = int8(0)];
        string pt = const()[name = string("pt"), val = string("valid")];
        tensor<int32, [2]> st = const()[name = string("st"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> pd = const()[name = string("pd"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> dl = const()[name = string("dl"), val = tensor<int32, [2]>([1, 1])];
        int32 gr = const()[name = string("gr"), val = int32(1)];
        tensor<fp16, [1,64,64,64]> c0 = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = W0, x = x)[name = string("c0")];
        fp16 q_scale = const()[name = string("q_scale"), val = fp16(0x1p-3)];
        string q_dtype = const()[name = string("q_dtype"), val = string("int8")];
        fp16 dq_scale = const()[name = string("dq_scale"), val = fp16(0x1p-3)];
        tensor<int8, [1,64,64,64]> q0 = quantize(input = c0, output_dtype = q_dtype, scale = q_scale)[name = string("q0")];
        tensor<fp16, [1,64,64,64]> dq0 = dequantize(input = q0, scale = dq_scale)[name = string("dq0")];
        tensor<fp16, [1,64,64,64]> c1 = conv(dilations = dl, groups = gr, pad = pd, pad_type = pt, strides = st, weight = W1, x = dq0)[name = string("c1")];
    } -> (c1);
"""  # noqa: E501
